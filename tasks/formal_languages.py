"""The formal-language tasks of Delétang et al. 2023, "Neural Networks and the Chomsky Hierarchy"
(ICLR 2023; google-deepmind/neural_networks_chomsky_hierarchy, `tasks/` and `experiments/`).

Each task maps an input string of length L to an output string of length `output_length(L)`:

| language              | level   | input alphabet                   | output                                   |
|-----------------------|---------|----------------------------------|------------------------------------------|
| `even_pairs`          | regular | {0, 1}                           | 1 iff the number of 01 and 10 pairs is odd |
| `parity_check`        | regular | {0, 1}                           | the number of 1s mod 2                    |
| `cycle_navigation`    | regular | {0, 1, 2} = {left, stay, right}  | the position on a cycle of 5 (start at 0) |
| `modular_arithmetic`  | regular | {0..4, +, -, *, _}               | the expression's value mod 5 (* binds first) |
| `reverse_string`      | DCF     | {0, 1}                           | the string reversed (L symbols)           |
| `stack_manipulation`  | DCF     | {0, 1, POP, PUSH 0, PUSH 1}      | the final stack top-to-bottom, 2 = end, 0-padded to L + 1 |
| `duplicate_string`    | CS      | {0, 1}                           | the string twice (2L symbols)             |
| `odds_first`          | CS      | {0, 1}                           | s[1::2] then s[::2], 0-based (L symbols)  |

Encoding (their `experiments/utils.make_model_with_empty_targets`, computation_steps_mult=0): the
input is the one-hot string (V channels) followed by `output_length(L)` steps of an "output empty"
token, one extra channel, so the model reads L + output_length(L) steps of V + 1 channels and its
predictions at the last output_length(L) steps are scored. A classification task (the regular
ones) is the case output_length = 1: one prediction after the string.

Loss (their `experiments/example.py`): cross-entropy averaged over every output position, padding
included. Accuracy (their `accuracy_fn` with the task's `accuracy_mask`): the fraction of correct
output positions, where only `stack_manipulation` masks (the positions after its end token do not
count); here a ratio of sums over the whole split. Sequence accuracy: all scored positions right.

Lengths: training lengths are drawn uniformly from 1..`seq_len` (their 1..40), one length per batch
as in their curriculum; the validation split spreads its sequences evenly over those lengths. Their
test is every length 41..500, scored by the mean over lengths of the per-length accuracy: here the
test split spreads its sequences evenly over `test_lengths` (all of 41..500, or a stated subset) and
reports that mean as `accuracy_mean_over_lengths` (on validation: the mean over 1..seq_len).
`eval_lengths` evaluates at single lengths too (`val@T=<L>/...`, the accuracy-against-length
curve). `modular_arithmetic` strings have odd length: an even length L gives a string of L - 1
symbols, as in their sampler.

Memoryless baseline: the loss of the best predictor that knows the length and the output position
but nothing of the string: the entropy of each output position's marginal distribution, summed
over positions and averaged the way the loss is (`chance`), over the validation split's lengths
(`loss_over_baseline` divides by the baseline of the evaluated split's own lengths). Closed forms per language in
`Language.marginals`; `chance_accuracy` is that predictor's accuracy.

Their `odds_first` docstring example (00110101 -> 0100 0111) takes the 1-based odd positions first;
their code, which produced the paper's numbers, takes the 0-based odd ones (s[1::2]); we follow the
code.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnbench.tasks.base import Batch, BatchShape, IOSpec
from rnnbench.tasks.synthetic import (
    AccuracyScoredTask, position_counts, require_int,
)

MODULUS = 5  # modular arithmetic and the cycle length, as in the paper
CYCLE_LENGTH = 5
# modular arithmetic's alphabet: residues 0..4, then the operators (their OP_BY_CHARACTER)
PLUS, MINUS, TIMES, BLANK_OP = MODULUS, MODULUS + 1, MODULUS + 2, MODULUS + 3
POP, PUSH_0, PUSH_1 = 2, 3, 4  # stack manipulation's actions; 0 and 1 are the initial stack's symbols
STACK_END = 2  # the output token that ends the final stack


# ---- the languages: sampling, the target function, the marginals of the target --------------
def _bits(L: int, B: int, g: torch.Generator, device) -> Tensor:
    return torch.randint(0, 2, (L, B), generator=g, device=device)  # (L, B)


def _even_pairs(s: Tensor) -> Tensor:
    return ((s[:-1] != s[1:]).sum(0) % 2).unsqueeze(0)  # (1, B)


def _parity(s: Tensor) -> Tensor:
    return (s.sum(0) % 2).unsqueeze(0)  # (1, B)


def _cycle(s: Tensor) -> Tensor:
    return ((s - 1).sum(0) % CYCLE_LENGTH).unsqueeze(0)  # action a moves by a - 1


def _modular_sample(L: int, B: int, g: torch.Generator, device) -> Tensor:
    L = L if L % 2 == 1 else L - 1  # odd: number (op number)*
    s = torch.empty(L, B, dtype=torch.long, device=device)
    s[0::2] = torch.randint(0, MODULUS, ((L + 1) // 2, B), generator=g, device=device)
    ops = torch.tensor([PLUS, TIMES, MINUS], device=device)  # never the blank `_`, as in their sampler
    s[1::2] = ops[torch.randint(0, 3, (L // 2, B), generator=g, device=device)]
    return s


def _modular(s: Tensor) -> Tensor:
    """Left to right with * binding tighter: `total` holds the finished additive terms, `term` the
    product being built (negated after a minus)."""
    total = torch.zeros_like(s[0])
    term = s[0].clone()
    for t in range(1, s.shape[0] - 1, 2):
        op, n = s[t], s[t + 1]
        times = op == TIMES
        total = torch.where(times, total, total + term)
        term = torch.where(times, term * n, torch.where(op == MINUS, -n, n)) % MODULUS
    return ((total + term) % MODULUS).unsqueeze(0)  # (1, B)


def _stack_sample(L: int, B: int, g: torch.Generator, device) -> Tensor:
    if L == 1:
        return _bits(1, B, g, device)
    stack_length = torch.randint(1, L, (B,), generator=g, device=device)  # U{1, ..., L-1}
    bits = _bits(L, B, g, device)
    actions = torch.randint(POP, PUSH_1 + 1, (L, B), generator=g, device=device)
    step = torch.arange(L, device=device).unsqueeze(1)
    return torch.where(step < stack_length, bits, actions)  # (L, B): the stack bottom-to-top, then actions


def _stack(s: Tensor) -> Tensor:
    """Read the initial stack's symbols as pushes (the same stack), ignore POP on an empty stack,
    then write the final stack top-to-bottom, the end token, zeros to L + 1."""
    L, B = s.shape
    stack = torch.zeros(B, L + 1, dtype=torch.long, device=s.device)
    height = torch.zeros(B, dtype=torch.long, device=s.device)
    rows = torch.arange(B, device=s.device)
    for t in range(L):
        symbol = s[t]
        push = symbol != POP
        bit = torch.where(symbol >= PUSH_0, symbol - PUSH_0, symbol)
        stack[rows, height] = torch.where(push, bit, stack[rows, height])
        height = torch.where(push, height + 1, (height - 1).clamp(min=0))
    j = torch.arange(L + 1, device=s.device).unsqueeze(1)  # (L + 1, 1) output positions
    top_down = stack.T.gather(0, (height - 1 - j).clamp(min=0))  # (L + 1, B)
    return torch.where(j < height, top_down, torch.where(j == height, STACK_END, 0))


def _stack_heights(L: int) -> Tensor:
    """P(final stack height = m), m = 0..L: the initial height is U{1..L-1}, then each of the
    remaining actions pops (1/3; nothing on an empty stack) or pushes (2/3)."""
    if L == 1:
        return F.one_hot(torch.tensor(1), L + 1).double()
    # sum_i delta_i K^(L - i) by Horner's scheme: each initial height i is added, then every
    # remaining step's transition K applies to all heights added so far
    h = torch.zeros(L + 1, dtype=torch.float64)
    for initial in range(1, L):
        h[initial] += 1 / (L - 1)
        popped = F.pad(h[1:], (0, 1))
        popped[0] += h[0]  # a POP on the empty stack is ignored
        h = 2 / 3 * F.pad(h[:-1], (1, 0)) + 1 / 3 * popped
    return h


def _uniform(positions: int, classes: int) -> Tensor:
    return torch.full((positions, classes), 1 / classes, dtype=torch.float64)


def _even_pairs_marginals(L: int) -> Tensor:
    return torch.tensor([[1.0, 0.0]], dtype=torch.float64) if L == 1 else _uniform(1, 2)


def _cycle_marginals(L: int) -> Tensor:
    """P(sum of L steps in {-1, 0, 1} = k mod 5) = 1/5 sum_j cos(2 pi j k / 5) c_j^L with
    c_j = (1 + 2 cos(2 pi j / 5)) / 3, the step's characteristic function (a DFT on Z_5)."""
    j = torch.arange(CYCLE_LENGTH, dtype=torch.float64)
    c = (1 + 2 * torch.cos(2 * math.pi * j / CYCLE_LENGTH)) / 3
    k = j.unsqueeze(1)
    return ((torch.cos(2 * math.pi * j * k / CYCLE_LENGTH) * c**L).sum(1) / CYCLE_LENGTH).unsqueeze(0)


def _modular_marginals(L: int) -> Tensor:
    """The exact law of the value, by the Markov chain over (finished sum, current product): 25
    states, one transition per (operator, number) pair, each of the 3 x 5 pairs equally likely."""
    L = L if L % 2 == 1 else L - 1
    M = MODULUS
    transition = torch.zeros(M, M, M, M, dtype=torch.float64)  # [total, term] -> [total', term']
    for total, term, n in itertools.product(range(M), repeat=3):
        transition[total, term, total, (term * n) % M] += 1 / (3 * M)  # *: the product grows
        for sign in (1, -1):  # + and -: the product joins the sum, a new term starts
            transition[total, term, (total + term) % M, (sign * n) % M] += 1 / (3 * M)
    start = torch.zeros(M, M, dtype=torch.float64)
    start[0, :] = 1 / M  # the first number
    joint = (start.reshape(1, -1) @ torch.linalg.matrix_power(transition.reshape(M * M, M * M), L // 2))
    joint = joint.reshape(M, M)
    value = torch.zeros(M, dtype=torch.float64)
    for total, term in itertools.product(range(M), repeat=2):
        value[(total + term) % M] += joint[total, term]
    return value.unsqueeze(0)


def _stack_marginals(L: int) -> Tensor:
    """Position j of the output: the end token iff the final height m = j; a uniform bit if m > j
    (each stack bit was drawn or pushed uniformly); the padding 0 if m < j."""
    m = _stack_heights(L)
    above = m.flip(0).cumsum(0).flip(0) - m  # P(m > j)
    below = 1 - above - m  # P(m < j)
    return torch.stack([above / 2 + below, above / 2, m], dim=1)  # (L + 1, 3)


def _stack_scored(L: int) -> Tensor:
    """P(position j is scored) = P(j <= m): the accuracy mask ends at the end token."""
    m = _stack_heights(L)
    return m.flip(0).cumsum(0).flip(0)


@dataclass(frozen=True)
class Language:
    """One task of Delétang et al.: its alphabet sizes, its sampler, its target function and the
    target's marginal law per output position (the memoryless predictor)."""

    level: str
    input_size: int
    output_size: int
    output_length: Callable[[int], int]
    sample: Callable[[int, int, torch.Generator, Any], Tensor]  # (L, B, generator, device) -> (L, B)
    target: Callable[[Tensor], Tensor]  # (L, B) symbols -> (output_length(L), B) classes
    marginals: Callable[[int], Tensor]  # L -> (output_length(L), output_size), float64
    masked: bool = False  # positions after the end token are not scored (stack manipulation)


def _bits_sampler(L, B, g, device):
    return _bits(L, B, g, device)


def _one(L: int) -> int:
    return 1


LANGUAGES: dict[str, Language] = {
    "even_pairs": Language("regular", 2, 2, _one, _bits_sampler, _even_pairs, _even_pairs_marginals),
    "parity_check": Language("regular", 2, 2, _one, _bits_sampler, _parity, lambda L: _uniform(1, 2)),
    "cycle_navigation": Language(
        "regular", 3, CYCLE_LENGTH, _one,
        lambda L, B, g, d: torch.randint(0, 3, (L, B), generator=g, device=d), _cycle, _cycle_marginals),
    "modular_arithmetic": Language("regular", MODULUS + 4, MODULUS, _one, _modular_sample, _modular,
                                   _modular_marginals),
    "reverse_string": Language("dcf", 2, 2, lambda L: L, _bits_sampler, lambda s: s.flip(0),
                               lambda L: _uniform(L, 2)),
    "stack_manipulation": Language("dcf", 5, 3, lambda L: L + 1, _stack_sample, _stack, _stack_marginals,
                                   masked=True),
    "duplicate_string": Language("cs", 2, 2, lambda L: 2 * L, _bits_sampler, lambda s: torch.cat([s, s]),
                                 lambda L: _uniform(2 * L, 2)),
    "odds_first": Language("cs", 2, 2, lambda L: L, _bits_sampler,
                           lambda s: torch.cat([s[1::2], s[0::2]]), lambda L: _uniform(L, 2)),
}
LANGUAGE_NAMES = tuple(LANGUAGES)


@functools.lru_cache(maxsize=None)
def chance(language: str, L: int) -> tuple[float, float, float]:
    """The memoryless predictor on one string of length L: (its summed cross-entropy over the output
    positions, its expected number of correct scored positions, the expected number scored)."""
    lang = LANGUAGES[language]
    p = lang.marginals(L)  # (P, C)
    entropy = float(-(p * torch.where(p > 0, p.log(), p.new_zeros(()))).sum())
    best = p.argmax(1)
    if not lang.masked:
        return entropy, float(p.max(1).values.sum()), float(p.shape[0])
    # stack: the argmax is scored only where j <= m; a 0 is right and scored only as a stack bit
    # (P(m > j) / 2, which is p[:, 1]), never as padding
    right = torch.where(best == 0, p[:, 1], p.gather(1, best.unsqueeze(1)).squeeze(1))
    return entropy, float(right.sum()), float(_stack_scored(L).sum())


def output_mask(language: str, targets: Tensor) -> Tensor:
    """(P, B) bool: the positions their accuracy counts (up to and including the end token)."""
    if not LANGUAGES[language].masked:
        return torch.ones_like(targets, dtype=torch.bool)
    ended = (targets == STACK_END).long().cumsum(0) - (targets == STACK_END).long()
    return ended == 0


class FormalLanguageTask(AccuracyScoredTask):
    """A formal-language task of Delétang et al. 2023 (see the module docstring).

    Batches (one length L per batch): inputs (L + P, B, V + 1) one-hot float32, the string then P =
    output_length(L) "output empty" steps; targets (P, B) int64. The model returns (L + P, B, C)
    logits, one per step; the last P are scored.
    Metrics: `loss`, `loss_over_baseline`, `accuracy` (per scored position: the paper's measure),
    `sequence_accuracy` (every scored position right). Solved when `accuracy >= solve_threshold`.
    """

    ALLOWED = {"language": LANGUAGE_NAMES}

    name = "formal_language"
    length_argument = "eval_length"  # `at_length` fixes the split's length; the training range stays

    def __init__(
        self,
        language: str = "parity_check",
        seq_len: int = 40,
        eval_length: int | None = None,
        test_lengths: Sequence[int] = (),
        batch_size: int = 128,
        val_size: int = 512,
        seed: int = 0,
        solve_threshold: float = 0.99,
        device: str | torch.device = "cpu",
        eval_lengths: Sequence[int] = (),
    ):
        super().__init__(batch_size, val_size, seed, device, eval_lengths, solve_threshold)
        if language not in LANGUAGES:
            raise ValueError(f"task.language={language!r} is not allowed: choose one of {', '.join(LANGUAGE_NAMES)}")
        require_int("seq_len", seq_len, 1)
        if eval_length is not None:
            require_int("eval_length", eval_length, 1)
        test_lengths = list(test_lengths or ())
        for length in test_lengths:
            require_int("test_lengths", length, 1)
        self.language = language
        self.lang = LANGUAGES[language]
        self.name = language
        self.seq_len = seq_len
        self.eval_length = eval_length
        self.test_lengths = tuple(test_lengths)
        self.empty_token = self.lang.input_size  # the "output empty" channel
        self.spec = IOSpec(
            input_kind="continuous",
            input_size=self.lang.input_size + 1,
            output_size=self.lang.output_size,
            output_kind="per_step",
            loss_kind="classification",
        )
        self._draw_splits()

    # ---- data -------------------------------------------------------------------------------
    def split_lengths(self, split: str = "val") -> list[int]:
        """The length of each sequence of a split: all `eval_length` where it is set; for `test` with
        `test_lengths`, those lengths in turn (the paper's test range, the same count at each); else
        1..seq_len in turn."""
        if self.eval_length is not None:
            return [self.eval_length] * self.val_size
        lengths = self.test_lengths if split == "test" and self.test_lengths else range(1, self.seq_len + 1)
        return [lengths[i % len(lengths)] for i in range(self.val_size)]

    def sequences(self, symbols: Tensor) -> Batch:
        """The batch whose strings are `symbols` (L, B) int64: inputs and targets as the model sees them."""
        L, B = symbols.shape
        targets = self.lang.target(symbols)  # (P, B)
        ids = torch.cat([symbols, symbols.new_full((targets.shape[0], B), self.empty_token)])  # (L + P, B)
        inputs = torch.zeros(*ids.shape, self.spec.input_size, device=ids.device)
        inputs.scatter_(2, ids.unsqueeze(-1), 1.0)  # (L + P, B, V + 1)
        return Batch(inputs=inputs, targets=targets)

    def _draw(self, n: int, generator: torch.Generator) -> Batch:
        L = int(torch.randint(1, self.seq_len + 1, (1,), generator=generator, device=self.device))
        return self.sequences(self.lang.sample(L, n, generator, self.device))

    def _draw_named_split(self, split: str) -> list[Tensor]:
        """A split grouped by length (one length per chunk: what a recurrent model reads without
        padding, and what the per-length mean is taken over)."""
        generator = self._split_generator(split)
        counts = collections.Counter(self.split_lengths(split))
        return [self.lang.sample(L, counts[L], generator, self.device) for L in sorted(counts)]

    def steps_at(self, seq_len: int) -> int:
        """The string (odd for modular arithmetic) and its output steps."""
        L = seq_len - 1 if self.language == "modular_arithmetic" and seq_len % 2 == 0 else seq_len
        return L + self.lang.output_length(L)

    def batch_shape(self) -> BatchShape:
        """The longest sequences are at the longest of the training, test and evaluation lengths."""
        lengths = {"task.seq_len": [self.seq_len], "task.eval_lengths": list(self.eval_lengths),
                   "task.test_lengths": list(self.test_lengths),
                   "task.eval_length": [self.eval_length] if self.eval_length else []}
        key, longest = max(((k, max(v)) for k, v in lengths.items() if v), key=lambda kv: self.steps_at(kv[1]))
        return BatchShape(self.steps_at(longest), self.batch_size, key)

    def _split_batches(self, groups: list[Tensor]) -> Iterator[Batch]:
        for symbols in groups:  # one length per group
            for start in range(0, symbols.shape[1], self.batch_size):
                yield self.sequences(symbols[:, start : start + self.batch_size])

    # ---- loss and metrics -------------------------------------------------------------------
    def _scored(self, outputs: Tensor, batch: Batch) -> Tensor:
        P, B = batch.targets.shape
        expected = (batch.inputs.shape[0], B, self.spec.output_size)
        if tuple(outputs.shape) != expected:
            raise ValueError(f"{self.name} outputs have shape {tuple(outputs.shape)}; expected (L + P, B, C) = {expected}")
        return outputs[-P:]  # (P, B, C): the predictions at the output steps

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        logits = self._scored(outputs, batch)
        return F.cross_entropy(logits.reshape(-1, self.spec.output_size), batch.targets.reshape(-1))

    def _counts(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        logits = self._scored(outputs, batch)
        everywhere = torch.ones_like(batch.targets, dtype=torch.bool)  # the loss covers padding too
        counts = position_counts(logits, batch.targets, everywhere, output_mask(self.language, batch.targets))
        B = batch.targets.shape[1]
        L = batch.inputs.shape[0] - batch.targets.shape[0]  # a chunk has one length
        # the baseline of these very lengths (a split at other lengths than validation's has its own)
        counts["baseline_loss_sum"] = B * chance(self.language, L)[0]
        # each sequence weighted by its chunk's accuracy: over equal counts per length, the mean over
        # lengths of the per-length accuracy (the paper's score over its test range)
        counts["length_weighted_correct"] = B * counts["correct"] / max(counts["scored"], 1)
        return counts

    def _metrics(self, counts: dict[str, float]) -> dict[str, float]:
        metrics = super()._metrics(counts)
        baseline = counts["baseline_loss_sum"]
        metrics["loss_over_baseline"] = counts["loss_sum"] / baseline if baseline > 0 else math.inf
        metrics["accuracy_mean_over_lengths"] = counts["length_weighted_correct"] / counts["sequences"]
        return metrics

    def _chance_totals(self) -> tuple[float, float, float, float]:
        loss = correct = scored = terms = 0.0
        for L in self.split_lengths("val"):
            sequence_loss, sequence_correct, sequence_scored = chance(self.language, L)
            loss, correct, scored = loss + sequence_loss, correct + sequence_correct, scored + sequence_scored
            terms += self.lang.output_length(L)
        return loss, correct, scored, terms

    @property
    def memoryless_baseline(self) -> float:
        """The loss over the validation split's lengths of the predictor that knows only the length
        and the position (`chance`), averaged over output positions as the loss is."""
        if not hasattr(self, "_baseline"):
            loss, correct, scored, terms = self._chance_totals()
            self._baseline, self._chance_accuracy = loss / terms, correct / scored
        return self._baseline

    @property
    def chance_accuracy(self) -> float:
        """That predictor's accuracy (the paper's "random" level is 1/C for a uniform guess)."""
        self.memoryless_baseline
        return self._chance_accuracy

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "language": self.language,
            "level": self.lang.level,
            "seq_len": self.seq_len,
            "train_lengths": f"uniform 1..{self.seq_len}",
            "eval_length": self.eval_length,
            "test_lengths": list(self.test_lengths) or f"as validation, 1..{self.seq_len}",
            "memoryless_baseline": self.memoryless_baseline,
            "chance_accuracy": self.chance_accuracy,
            "solve_threshold": self.solve_threshold,
            "batch_size": self.batch_size,
            "val_size": self.val_size,
            "seed": self.seed,
        }
