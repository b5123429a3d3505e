"""Study 4's LSTM slow start is not rnnbench's: the same model written with torch modules only.

In `study_char_lm` the LSTM (and the peephole LSTM) stay at the unigram loss (3.32 nats) for the first
~50 steps and end behind the tanh RNN (README "Results", study 4). This trains lm_char_shakespeare's
model as plain PyTorch (nn.Embedding initialised U(-0.1, 0.1) as pytorch/examples, nn.LSTM / nn.GRU /
nn.RNN with 2 layers and dropout 0.1 between them, nn.Linear; Adam 2e-3, cosine decay over the
preset's 5,000 steps, gradient norm clipped to 5) on rnnbench's own training stream (32 streams,
windows of 100 characters, state carried), and prints the training loss at the steps the study's
metrics.jsonl records, to set beside them.

    RNNBENCH_DATA=<folder with tinyshakespeare/input.txt> python scripts/char_lm_torch_reference.py \
        [--cell lstm] [--hidden 127] [--steps 500] [--seed 0] [--forget-bias 1.0]
"""

import argparse
import math

import torch
from torch import nn

from rnnbench.tasks.language_model import LanguageModelTask

MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "vanilla": nn.RNN}
REPORTED = (50, 100, 200, 300, 500, 1000, 2000, 5000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=sorted(MODULES), default="lstm")
    parser.add_argument("--hidden", type=int, default=127, help="the study's LSTM width at ~240K parameters")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forget-bias", type=float, default=1.0,
                        help="the LSTM's total forget-gate bias, as rnnbench sets it (nan: torch's random init)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    task = LanguageModelTask(corpus="tinyshakespeare", level="char", bptt=100, batch_size=32)
    V, H = task.spec.input_size, args.hidden
    embedding = nn.Embedding(V, 64)
    nn.init.uniform_(embedding.weight, -0.1, 0.1)
    rnn = MODULES[args.cell](64, H, num_layers=2, dropout=0.1)
    if args.cell == "lstm" and not math.isnan(args.forget_bias):
        with torch.no_grad():  # gate order i, f, g, o: b_f = bias_ih[f] + bias_hh[f]
            for layer in range(2):
                getattr(rnn, f"bias_ih_l{layer}")[H:2 * H].fill_(args.forget_bias)
                getattr(rnn, f"bias_hh_l{layer}")[H:2 * H].zero_()
    head = nn.Linear(H, V)
    params = [*embedding.parameters(), *rnn.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5000)

    state = None
    for step in range(1, args.steps + 1):
        batch = task.train_batch()
        if batch.reset_state:
            state = None
        elif state is not None:  # truncated BPTT: carry the state, not its graph
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        out, state = rnn(embedding(batch.inputs), state)  # (T, B, H)
        logits = head(out)  # (T, B, V)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), batch.targets.reshape(-1), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        schedule.step()
        if step in REPORTED:
            print(f"{args.cell} H={H} step {step}: train/loss {loss.item():.3f}", flush=True)


if __name__ == "__main__":
    main()
