"""Specification of the formal-language tasks (tasks/formal_languages.py), Delétang et al. 2023:
each language against the examples of its published definition, the encoding and the scored mask
written out by hand, the memoryless baselines against exhaustive enumeration, and learning."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F

from rnnbench.tasks.base import Batch
from rnnbench.tasks.formal_languages import (
    LANGUAGE_NAMES, LANGUAGES, MINUS, PLUS, POP, PUSH_0, PUSH_1, TIMES, FormalLanguageTask, chance,
    output_mask,
)


@pytest.fixture(autouse=True)
def uncached_chance():
    """`chance` is cached per process; mutmut forks each mutant's tests from a process whose cache the
    unmutated code filled, so a test must compute it afresh to see a mutant of what it calls."""
    chance.cache_clear()


def target(language: str, string: list[int]) -> list[int]:
    return LANGUAGES[language].target(torch.tensor(string).unsqueeze(1)).squeeze(1).tolist()


# ---- the published examples (the docstrings of google-deepmind/neural_networks_chomsky_hierarchy) ----
ARITH = {"+": PLUS, "-": MINUS, "*": TIMES}


@pytest.mark.parametrize("language, string, expected", [
    ("even_pairs", "001110", [0]),  # one 10 and one 01
    ("even_pairs", "0101001", [1]),  # two 10 and three 01
    ("even_pairs", "1", [0]),
    ("parity_check", "1010100", [1]),
    ("parity_check", "01111", [0]),
    ("cycle_navigation", [2, 0, 1, 0, 0], [3]),  # 1 -1 0 -1 -1 -> -2 = class 3 (token = move + 1)
    ("cycle_navigation", [2, 2, 2, 0], [2]),  # 1 1 1 -1
    ("modular_arithmetic", "1+2*3", [2]),
    ("modular_arithmetic", "1-1-1", [4]),
    ("modular_arithmetic", "0*1+4*3-2", [0]),
    ("reverse_string", "011010", [0, 1, 0, 1, 1, 0]),
    ("duplicate_string", "101", [1, 0, 1, 1, 0, 1]),
    ("odds_first", "00110101", [0, 1, 1, 1, 0, 1, 0, 0]),  # their code: s[1::2] then s[::2]
    ("odds_first", "110", [1, 1, 0]),
    # 0 1 1 0 PUSH1 POP POP -> 1 1 0, end, zero padding to length 8
    ("stack_manipulation", [0, 1, 1, 0, PUSH_1, POP, POP], [1, 1, 0, 2, 0, 0, 0, 0]),
    ("stack_manipulation", [1, 1, 0, POP, POP, POP], [2, 0, 0, 0, 0, 0, 0]),  # emptied
    ("stack_manipulation", [1, POP, POP, PUSH_0], [0, 2, 0, 0, 0]),  # POP on empty is ignored
])
def test_each_language_on_its_published_examples(language, string, expected):
    symbols = [ARITH[c] if c in ARITH else int(c) for c in string] if isinstance(string, str) else string
    assert target(language, symbols) == expected


def test_the_encoding_of_a_classification_and_a_sequence_task_written_out():
    parity = FormalLanguageTask("parity_check", val_size=4)
    batch = parity.sequences(torch.tensor([[1], [0], [1]]))  # "101"
    # 0, 1 and the "output empty" token 2: the string, then one output step
    assert batch.inputs[:, 0].tolist() == [[0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert batch.targets.tolist() == [[0]]
    reverse = FormalLanguageTask("reverse_string", val_size=4)
    batch = reverse.sequences(torch.tensor([[0], [1], [1]]))  # "011": 3 input steps, 3 output steps
    assert batch.inputs[:, 0].argmax(-1).tolist() == [0, 1, 1, 2, 2, 2]
    assert batch.targets[:, 0].tolist() == [1, 1, 0]
    assert output_mask("reverse_string", batch.targets).all()


def test_stack_manipulation_scores_up_to_its_end_token_only():
    task = FormalLanguageTask("stack_manipulation", val_size=4)
    batch = task.sequences(torch.tensor([0, 1, 1, 0, PUSH_1, POP, POP]).unsqueeze(1))
    assert batch.inputs.shape == (7 + 8, 1, 6)  # 5 symbols + the output token; L + 1 output steps
    mask = output_mask("stack_manipulation", batch.targets)[:, 0]
    assert mask.tolist() == [True] * 4 + [False] * 4  # 1 1 0 <end> scored, padding not
    logits = 20.0 * F.one_hot(batch.targets, 3).float()
    outputs = torch.cat([torch.zeros(7, 1, 3), logits])
    outputs[-1] = outputs[-1].roll(1, -1)  # a wrong padding position: not counted
    metrics = task._metrics(task._counts(outputs, batch))
    assert metrics["accuracy"] == 1.0 and metrics["sequence_accuracy"] == 1.0
    outputs[8] = outputs[8].roll(1, -1)  # a wrong stack symbol: 3 of 4 scored positions right
    metrics = task._metrics(task._counts(outputs, batch))
    assert metrics["accuracy"] == 0.75 and metrics["sequence_accuracy"] == 0.0


# ---- the targets against independent oracles ----------------------------------------------------
def test_modular_arithmetic_against_python_arithmetic():
    task = FormalLanguageTask("modular_arithmetic", val_size=4, seed=5)
    names = {PLUS: "+", MINUS: "-", TIMES: "*"}
    for L in (1, 3, 9, 21):
        symbols = LANGUAGES["modular_arithmetic"].sample(L, 200, task._generator, "cpu")
        values = LANGUAGES["modular_arithmetic"].target(symbols)[0]
        for b in range(200):
            text = "".join(names.get(int(s), str(int(s))) for s in symbols[:, b])
            assert int(values[b]) == eval(text) % 5, text


def stack_by_list(string: list[int]) -> list[int]:
    """Delétang et al.'s procedure with a Python list."""
    stack = [s for s in itertools.takewhile(lambda s: s < 2, string)]
    for action in string[len(stack):]:
        if action == POP:
            stack = stack[:-1]
        else:
            stack.append(action - PUSH_0)
    out = stack[::-1] + [2]
    return out + [0] * (len(string) + 1 - len(out))


def test_stack_manipulation_against_a_list_and_its_sampler_shape():
    generator = torch.Generator().manual_seed(0)
    for L in (1, 2, 7, 30):
        symbols = LANGUAGES["stack_manipulation"].sample(L, 100, generator, "cpu")  # (L, B)
        targets = LANGUAGES["stack_manipulation"].target(symbols)
        for b in range(100):
            string = symbols[:, b].tolist()
            initial = len(list(itertools.takewhile(lambda s: s < 2, string)))
            assert initial == L if L == 1 else 1 <= initial <= L - 1  # the stack, then only actions
            assert targets[:, b].tolist() == stack_by_list(string)


# ---- lengths ---------------------------------------------------------------------------------
def test_training_lengths_are_uniform_over_one_to_seq_len_one_per_batch():
    task = FormalLanguageTask("reverse_string", seq_len=6, batch_size=3, val_size=12)
    lengths = [task.train_batch().targets.shape[0] for _ in range(600)]
    assert set(lengths) == set(range(1, 7))
    assert all(abs(lengths.count(L) / 600 - 1 / 6) < 0.05 for L in range(1, 7))
    assert task.split_lengths() == [1, 2, 3, 4, 5, 6] * 2


def test_modular_arithmetic_strings_have_odd_length():
    task = FormalLanguageTask("modular_arithmetic", seq_len=8, batch_size=2, val_size=8)
    for _ in range(50):
        batch = task.train_batch()
        assert (batch.inputs.shape[0] - 1) % 2 == 1


def test_at_length_fixes_the_evaluation_length_and_keeps_the_training_range():
    task = FormalLanguageTask("duplicate_string", seq_len=5, val_size=10, batch_size=4, eval_lengths=[12, 20])
    longer = task.at_length(12)
    assert longer.seq_len == 5 and longer.eval_length == 12 and longer.split_lengths() == [12] * 10
    batch = longer.probe_batch()
    assert batch.inputs.shape[0] == 12 + 24 and batch.targets.shape[0] == 24
    same = FormalLanguageTask("duplicate_string", seq_len=5, val_size=10, batch_size=4, eval_length=12)
    assert torch.equal(same.probe_batch().inputs, batch.inputs)


def test_the_test_split_spreads_over_the_test_lengths_and_scores_their_mean():
    task = FormalLanguageTask("reverse_string", seq_len=4, val_size=30, batch_size=4, test_lengths=[10, 20, 30])
    assert task.split_lengths("test") == [10, 20, 30] * 10 and task.split_lengths("val") == [1, 2, 3, 4] * 7 + [1, 2]

    def right_up_to_15(batch, state):  # right at the first 15 output positions, wrong after
        out, state = oracle(batch, state)
        out = out[..., :2].clone()
        P = batch.targets.shape[0]
        out[-P + 15 :] = out[-P + 15 :].roll(1, -1) if P > 15 else out[-P + 15 :]
        return out, state

    metrics = task.evaluate(right_up_to_15, "test")
    # per length: 10 -> 1, 20 -> 15/20, 30 -> 15/30; the paper's score is their mean
    assert metrics["accuracy_mean_over_lengths"] == pytest.approx((1 + 0.75 + 0.5) / 3)
    assert metrics["accuracy"] == pytest.approx((10 + 15 + 15) / 60)  # per position, pooled
    assert metrics["sequence_accuracy"] == pytest.approx(1 / 3)
    assert task.evaluate(right_up_to_15, "val")["accuracy_mean_over_lengths"] == 1.0


# ---- baselines: closed forms against enumeration -------------------------------------------------
def enumerated(language: str, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact law of the targets at length L by enumerating every string with its probability:
    (marginals (P, C), P(position scored) (P,))."""
    lang = LANGUAGES[language]
    strings: list[tuple[list[int], float]] = []
    if language == "modular_arithmetic":
        n = L if L % 2 else L - 1
        for numbers in itertools.product(range(5), repeat=(n + 1) // 2):
            for ops in itertools.product((PLUS, MINUS, TIMES), repeat=n // 2):
                s = [numbers[0]] + [x for pair in zip(ops, numbers[1:]) for x in pair]
                strings.append((s, 1 / (5 ** len(numbers) * 3 ** len(ops))))
    elif language == "stack_manipulation" and L > 1:
        for initial in range(1, L):
            for stack in itertools.product((0, 1), repeat=initial):
                for actions in itertools.product((POP, PUSH_0, PUSH_1), repeat=L - initial):
                    strings.append((list(stack + actions), 1 / ((L - 1) * 2**initial * 3 ** (L - initial))))
    else:
        for s in itertools.product(range(lang.input_size if language != "stack_manipulation" else 2), repeat=L):
            strings.append((list(s), 1 / ((lang.input_size if language != "stack_manipulation" else 2) ** L)))
    P = lang.output_length(L)
    marginals = torch.zeros(P, lang.output_size, dtype=torch.float64)
    scored = torch.zeros(P, dtype=torch.float64)
    for s, p in strings:
        t = lang.target(torch.tensor(s).unsqueeze(1))
        marginals[torch.arange(P), t[:, 0]] += p
        scored += p * output_mask(language, t)[:, 0].double()
    return marginals, scored


@pytest.mark.parametrize("language", LANGUAGE_NAMES)
def test_memoryless_marginals_match_enumeration(language):
    for L in (1, 2, 3, 4, 5):
        marginals, scored = enumerated(language, L)
        assert torch.allclose(LANGUAGES[language].marginals(L), marginals, atol=1e-12), L
        best = marginals.argmax(1)
        if language == "stack_manipulation":  # a 0 is scored only as a stack bit
            right = torch.where(best == 0, marginals[:, 1], marginals.gather(1, best[:, None])[:, 0])
        else:
            right = marginals.max(1).values
        entropy = float(-(marginals * marginals.clamp(min=1e-300).log()).sum())
        assert chance(language, L) == pytest.approx((entropy, float(right.sum()), float(scored.sum())))


def test_baselines_in_closed_form():
    assert chance("parity_check", 40)[0] == pytest.approx(math.log(2))
    assert chance("even_pairs", 1)[0] == 0.0  # no pairs: always even
    assert chance("cycle_navigation", 1) == pytest.approx((math.log(3), 1 / 3, 1))
    assert chance("cycle_navigation", 400)[0] == pytest.approx(math.log(5))  # the walk mixes
    assert chance("duplicate_string", 7) == pytest.approx((14 * math.log(2), 7, 14))
    assert FormalLanguageTask("parity_check", seq_len=40, val_size=40).memoryless_baseline == pytest.approx(math.log(2))
    even = FormalLanguageTask("even_pairs", seq_len=40, val_size=80)  # length 1 twice in 80: zero loss
    assert even.memoryless_baseline == pytest.approx(39 / 40 * math.log(2))
    assert even.chance_accuracy == pytest.approx(1 / 40 + 39 / 40 / 2)


def memoryless(task: FormalLanguageTask):
    def predict(batch: Batch, state):
        P = batch.targets.shape[0]
        L = batch.inputs.shape[0] - P
        log_p = LANGUAGES[task.language].marginals(L).float().clamp(min=1e-30).log()  # (P, C)
        return torch.cat([torch.zeros(L, *log_p.shape[1:]).unsqueeze(1).expand(L, batch.targets.shape[1], -1),
                          log_p.unsqueeze(1).expand(P, batch.targets.shape[1], -1)]), state
    return predict


@pytest.mark.parametrize("language", LANGUAGE_NAMES)
def test_the_memoryless_predictor_scores_the_baseline(language):
    task = FormalLanguageTask(language, seq_len=12, val_size=3000, batch_size=1000, seed=1)
    metrics = task.evaluate(memoryless(task))
    assert metrics["loss"] == pytest.approx(task.memoryless_baseline, rel=0.03)
    assert metrics["loss_over_baseline"] == pytest.approx(1.0, rel=0.03)
    assert metrics["accuracy"] == pytest.approx(task.chance_accuracy, abs=0.03)


# ---- the oracle, metrics and errors ---------------------------------------------------------
def oracle(batch: Batch, state):
    P = batch.targets.shape[0]
    C = int(batch.targets.max()) + 1
    logits = 20.0 * F.one_hot(batch.targets, max(C, 5)).float()
    return torch.cat([torch.zeros(batch.inputs.shape[0] - P, *logits.shape[1:]), logits]), state


@pytest.mark.parametrize("language", LANGUAGE_NAMES)
def test_the_oracle_solves_every_language_and_metrics_add_up(language):
    task = FormalLanguageTask(language, seq_len=9, val_size=40, batch_size=7)
    C = task.spec.output_size

    def exact(batch, state):
        out, state = oracle(batch, state)
        return out[..., :C], state

    metrics = task.evaluate(exact)
    assert metrics["accuracy"] == metrics["sequence_accuracy"] == 1.0 and metrics["loss"] < 1e-6
    assert task.solved(metrics) and task.main_metric == "accuracy"
    assert set(task.describe()) >= {"language", "level", "memoryless_baseline", "chance_accuracy"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(language="dyck"), "task.language='dyck' is not allowed: choose one of even_pairs"),
    (dict(seq_len=0), "seq_len=0"),
    (dict(eval_length=-2), "eval_length=-2"),
    (dict(test_lengths=[41, 0]), "test_lengths=0"),
    (dict(solve_threshold=2), "solve_threshold=2"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        FormalLanguageTask(**kwargs)


@pytest.mark.parametrize("overrides, message", [
    (["task.language=dyck"], r"task.language='dyck' is not allowed: choose one of even_pairs, parity_check"),
    (["task.eval_length=0"], r"task.eval_length=0 is not allowed: must be a positive integer"),
    (["task.seq_len=0"], r"task.seq_len=0 is not allowed: must be a positive integer"),
])
def test_bad_config_values_are_refused_before_a_run(overrides, message):
    from rnnbench.errors import ConfigError
    from rnnbench.run.config import compose, validate

    with pytest.raises(ConfigError, match=message):
        validate(compose(["task=parity_check", *overrides]))


def test_bad_test_lengths_are_refused_when_the_task_is_built():
    from rnnbench.errors import ConfigError
    from rnnbench.run.build import build_task
    from rnnbench.run.config import compose

    with pytest.raises(ConfigError, match=r"test_lengths=0: must be an integer >= 1"):
        build_task(compose(["task=reverse_string", "task.test_lengths=[41,0]"]))


def test_the_batch_shape_is_the_longest_of_the_training_test_and_evaluation_lengths():
    """What the run's memory estimate reads before anything is drawn: duplicate string at L = 450 is
    450 + 900 steps; modular arithmetic's even length drops one symbol."""
    from rnnbench.tasks.base import BatchShape

    task = FormalLanguageTask("duplicate_string", seq_len=40, val_size=8, test_lengths=[50, 450], eval_lengths=[100])
    assert task.batch_shape() == BatchShape(1350, 128, "task.test_lengths")
    assert FormalLanguageTask("parity_check", seq_len=40, val_size=8).batch_shape() == BatchShape(41, 128, "task.seq_len")
    assert FormalLanguageTask("modular_arithmetic", val_size=8).steps_at(40) == 39 + 1
    assert FormalLanguageTask("stack_manipulation", val_size=8).steps_at(40) == 40 + 41


# ---- what the mutation run of the module found untested (docs/testing.md, "### `formal_languages.py`") ----
@pytest.mark.parametrize("language", LANGUAGE_NAMES)
def test_each_sampler_and_the_training_batches_draw_from_their_own_generator_alone(language):
    """The same seed gives the same strings whatever torch's global generator holds (a draw from the
    global generator would make runs depend on what else ran before them)."""
    def drawn(global_seed):
        torch.manual_seed(global_seed)
        generator = torch.Generator().manual_seed(3)
        strings = [LANGUAGES[language].sample(L, 50, generator, "cpu") for L in (1, 2, 7)]
        task = FormalLanguageTask(language, seq_len=9, batch_size=50, val_size=4, seed=4)
        return strings, [task.train_batch().inputs for _ in range(3)]

    (strings, batches), (strings_again, batches_again) = drawn(0), drawn(1)
    assert all(torch.equal(a, b) for a, b in zip(strings, strings_again))
    assert all(torch.equal(a, b) for a, b in zip(batches, batches_again))


def test_modular_arithmetic_drops_one_symbol_of_an_even_length_and_draws_every_operator_and_number():
    """Their sampler: an even length L gives L - 1 symbols; numbers uniform over 0..4, operators over
    +, -, * (never the blank)."""
    generator = torch.Generator().manual_seed(0)
    s = LANGUAGES["modular_arithmetic"].sample(8, 3000, generator, "cpu")
    assert s.shape == (7, 3000)
    numbers, ops = s[0::2].flatten(), s[1::2].flatten()
    assert torch.allclose(torch.bincount(numbers, minlength=5).double() / len(numbers), torch.full((5,), 0.2, dtype=torch.float64), atol=0.02)
    frequency = {op: float((ops == op).double().mean()) for op in (PLUS, MINUS, TIMES)}
    assert all(abs(f - 1 / 3) < 0.03 for f in frequency.values()) and sum(frequency.values()) == pytest.approx(1.0)


def test_the_batch_shape_names_the_key_of_the_longest_sequences():
    from rnnbench.tasks.base import BatchShape

    assert FormalLanguageTask("parity_check", seq_len=40, val_size=8, eval_lengths=[100]).batch_shape() == \
        BatchShape(101, 128, "task.eval_lengths")
    assert FormalLanguageTask("parity_check", seq_len=40, val_size=8, eval_length=60).batch_shape() == \
        BatchShape(61, 128, "task.eval_length")
    # the longest by steps, not the last key by name: "task.test_lengths" sorts after "task.seq_len"
    assert FormalLanguageTask("reverse_string", seq_len=40, val_size=8, test_lengths=[10]).batch_shape() == \
        BatchShape(80, 128, "task.seq_len")


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_split_is_evaluated_once_in_chunks_of_at_most_batch_size(split):
    task = FormalLanguageTask("parity_check", seq_len=3, val_size=30, batch_size=4, test_lengths=[5, 6])
    widths = []

    def record(batch, state):
        widths.append(batch.targets.shape[1])
        return oracle(batch, state)[0][..., :2], state

    task.evaluate(record, split)
    assert sum(widths) == 30 and max(widths) == 4


def test_a_batch_and_the_stack_target_are_built_on_the_device_of_their_symbols():
    """The meta device stands in for a GPU: the encoding and the stack's own buffers follow the strings."""
    symbols = torch.zeros(3, 2, dtype=torch.long, device="meta")
    assert LANGUAGES["stack_manipulation"].target(symbols).device.type == "meta"
    batch = FormalLanguageTask("stack_manipulation", val_size=4).sequences(symbols)
    assert (batch.inputs.device.type, batch.targets.device.type) == ("meta", "meta")


def test_the_encoding_of_a_batch_of_two_strings_is_one_hot_per_string():
    task = FormalLanguageTask("parity_check", val_size=4)
    batch = task.sequences(torch.tensor([[1, 0], [1, 0]]))  # "11" and "00"
    assert batch.inputs.permute(1, 0, 2).tolist() == [[[0, 1, 0], [0, 1, 0], [0, 0, 1]],
                                                      [[1, 0, 0], [1, 0, 0], [0, 0, 1]]]
    assert batch.targets.tolist() == [[0, 0]]


def test_the_loss_is_the_cross_entropy_over_every_output_position_padding_included():
    """Their loss: cross-entropy averaged over all L + 1 output positions of stack manipulation, the
    positions after the end token too; the L input steps' outputs do not count."""
    task = FormalLanguageTask("stack_manipulation", val_size=4)
    batch = task.sequences(torch.tensor([[0, 1], [1, POP], [PUSH_0, POP]]))  # targets (4, 2)
    outputs = torch.randn(3 + 4, 2, 3, generator=torch.Generator().manual_seed(0))
    log_p = outputs[3:].log_softmax(-1)
    by_hand = -sum(float(log_p[j, b, batch.targets[j, b]]) for j in range(4) for b in range(2)) / 8
    assert float(task.loss(outputs, batch)) == pytest.approx(by_hand)
    outputs[:3] = 100.0  # the input steps' outputs
    assert float(task.loss(outputs, batch)) == pytest.approx(by_hand)


def test_outputs_of_the_wrong_shape_are_refused_with_the_expected_shape():
    task = FormalLanguageTask("parity_check", val_size=4)
    batch = task.sequences(torch.tensor([[1], [0]]))
    message = "parity_check outputs have shape (2, 1, 2); expected (L + P, B, C) = (3, 1, 2)"
    with pytest.raises(ValueError, match=re.escape(message)):
        task.loss(torch.zeros(2, 1, 2), batch)


def test_the_mean_over_lengths_counts_a_length_with_one_scored_position():
    """One sequence a length and one output each (parity at 1..4): every chunk scores one position."""
    task = FormalLanguageTask("parity_check", seq_len=4, val_size=4)
    assert task.evaluate(lambda batch, state: (oracle(batch, state)[0][..., :2], state))["accuracy_mean_over_lengths"] == 1.0


def test_loss_over_baseline_divides_by_the_baseline_of_the_evaluated_lengths():
    """A uniform guess on cycle navigation at L = 30 (test) against the memoryless loss at 30, not at the
    validation lengths 1..2; a split whose baseline is zero (even pairs at L = 1: no pair) gives inf;
    a baseline below 1 is still a baseline."""
    task = FormalLanguageTask("cycle_navigation", seq_len=2, val_size=6, test_lengths=[30])
    uniform = lambda batch, state: (torch.zeros(*batch.inputs.shape[:2], 5), state)  # noqa: E731
    assert task.evaluate(uniform, "test")["loss_over_baseline"] == pytest.approx(math.log(5) / chance("cycle_navigation", 30)[0])
    no_pairs = FormalLanguageTask("even_pairs", val_size=2, eval_length=1)
    assert no_pairs.evaluate(lambda batch, state: (torch.zeros(2, batch.targets.shape[1], 2), state))["loss_over_baseline"] == math.inf
    one = FormalLanguageTask("even_pairs", val_size=1, eval_length=2)  # baseline ln 2 < 1
    assert one.evaluate(lambda batch, state: (torch.zeros(3, 1, 2), state))["loss_over_baseline"] == pytest.approx(1.0)


def test_describe_gives_every_setting_and_the_baseline_in_closed_form():
    """even_pairs at lengths 1..4 (twice each): at L = 1 the answer is known (loss 0, always right), else
    a fair coin (ln 2, one half)."""
    task = FormalLanguageTask("even_pairs", seq_len=4, val_size=8, batch_size=16, seed=3, solve_threshold=0.9)
    assert task.describe() == {
        "task": "even_pairs", "language": "even_pairs", "level": "regular", "seq_len": 4,
        "train_lengths": "uniform 1..4", "eval_length": None, "test_lengths": "as validation, 1..4",
        "memoryless_baseline": pytest.approx(3 / 4 * math.log(2)), "chance_accuracy": pytest.approx((1 + 3 / 2) / 4),
        "solve_threshold": 0.9, "batch_size": 16, "val_size": 8, "seed": 3,
    }
    assert FormalLanguageTask("even_pairs", val_size=8, test_lengths=[50, 60]).describe()["test_lengths"] == [50, 60]


def test_formal_language_describes_its_documented_defaults_and_reads_one_hot_symbols():
    """The defaults of docs/configuration.md's `task=formal_language` table (the paper's training range
    1..40): parity's baseline is ln 2 and a fair coin's accuracy at every length."""
    from rnnbench.tasks.base import IOSpec

    task = FormalLanguageTask()
    assert task.describe() == {
        "task": "parity_check", "language": "parity_check", "level": "regular", "seq_len": 40,
        "train_lengths": "uniform 1..40", "eval_length": None, "test_lengths": "as validation, 1..40",
        "memoryless_baseline": pytest.approx(math.log(2)), "chance_accuracy": pytest.approx(0.5),
        "solve_threshold": 0.99, "batch_size": 128, "val_size": 512, "seed": 0,
    }
    assert task.spec == IOSpec(input_kind="continuous", input_size=3, output_size=2, output_kind="per_step",
                               loss_kind="classification")
    assert FormalLanguageTask("modular_arithmetic", val_size=4).spec.input_size == 5 + 4 + 1


def test_length_one_is_a_string_and_an_unknown_language_lists_all_eight():
    assert FormalLanguageTask("parity_check", seq_len=1, val_size=2).split_lengths() == [1, 1]
    assert FormalLanguageTask("parity_check", eval_length=1, val_size=2).split_lengths() == [1, 1]
    message = ("task.language='dyck' is not allowed: choose one of even_pairs, parity_check, cycle_navigation, "
               "modular_arithmetic, reverse_string, stack_manipulation, duplicate_string, odds_first")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        FormalLanguageTask("dyck")


def test_the_output_mask_is_boolean_for_every_language():
    """What `output_mask` documents, (P, B) bool: a mask a caller indexes with."""
    targets = torch.tensor([[1, 0], [2, 2], [0, 0]])
    assert output_mask("reverse_string", targets).dtype == torch.bool
    assert output_mask("stack_manipulation", targets).tolist() == [[True, True], [True, True], [False, False]]
