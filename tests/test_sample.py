"""`python -m rnnbench.sample RUN_DIR`: a character LM trained on the generated grammar corpus of the
LM tests writes grammatical lines; the same seed gives the same text, temperature 0 is greedy; bad
primes, temperatures and runs are clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import run_cli
from datagen import char_corpus
from rnnbench import evaluate, sample

# datagen.char_corpus's grammar, one sentence a line
GRAMMAR = re.compile(r"(the|a) (cat|dog) (sat|ran) (on|under) the (mat|log) (quickly|slowly)\.")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """An LSTM char LM, 300 steps on the grammar corpus: measured here val 0.23 bits/char (unigram
    ~4 bits), 22 s of training."""
    root = tmp_path_factory.mktemp("sample")
    corpus = char_corpus(root / "corpus.txt")
    folder = root / "run"
    proc = run_cli("task=lm", f"task.corpus={corpus}", "task.level=char", "task.bptt=32", "train.batch_size=16",
                   "task.eval_batch_size=4", "model.hidden_size=64", "train.max_steps=300", "train.eval_every=100",
                   "train.profile_every=0", "optim.lr=0.01", "train.threads=1", "logger.wandb.mode=disabled",
                   f"hydra.run.dir={folder}", cwd=root, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def complete_lines(text: str) -> list[str]:
    """The lines that start and end inside the text (the first and last may be cut)."""
    return text.split("\n")[1:-1]


def test_the_trained_model_samples_grammatical_lines(lm_run):
    text = sample.sample(lm_run, length=800, temperature=0.7, seed=0)
    lines = complete_lines(text)
    assert len(lines) >= 15, text
    grammatical = [line for line in lines if GRAMMAR.fullmatch(line)]
    assert len(grammatical) >= 0.9 * len(lines), text
    assert len(set(grammatical)) >= 4, text  # it samples: not one memorised line


def test_greedy_decoding_continues_the_prime_grammatically(lm_run, capsys):
    assert sample.main([str(lm_run), "--prime", "a dog", "--temperature", "0", "--length", "200"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("a dog ")
    first, *rest = text.split("\n")[:-2]
    assert GRAMMAR.fullmatch(first), text
    assert rest and all(GRAMMAR.fullmatch(line) for line in rest), text
    # greedy: the draws' seed plays no part
    assert sample.sample(lm_run, "a dog", 200, 0.0, seed=1) == sample.sample(lm_run, "a dog", 200, 0.0, seed=2) \
        == text.removesuffix("\n")


def test_the_same_seed_gives_the_same_text(lm_run):
    a = sample.sample(lm_run, "the", 300, 1.0, seed=7)
    assert a == sample.sample(lm_run, "the", 300, 1.0, seed=7)
    assert a != sample.sample(lm_run, "the", 300, 1.0, seed=8)


@pytest.mark.parametrize("args, message", [
    (["--prime", "the QUIZ"], "--prime 'the QUIZ' has characters outside the model's vocabulary: 'Q', 'U', 'I', "
     "'Z' (the vocabulary has"),
    (["--temperature", "-1"], "--temperature -1.0 is not allowed: must be >= 0 (0: greedy decoding)"),
    (["--length", "0"], "--length 0 is not allowed: must be >= 1 (tokens to generate)"),
])
def test_bad_options_are_one_clear_error(lm_run, capsys, args, message):
    assert sample.main([str(lm_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error in config:\n") and message in err, err


def test_a_run_that_is_not_a_language_model_is_refused(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("task:\n  _target_: rnnbench.tasks.adding.AddingTask\n  seq_len: 50\n")
    assert sample.main([str(tmp_path)]) == 2
    assert (f"{tmp_path} is a run of AddingTask, not a language model: sampling needs a run of task=lm"
            in capsys.readouterr().err)


def test_evaluating_on_text_with_another_vocabulary_is_refused(lm_run, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("THE CAT SAT ON THE MAT.\n" * 400)
    assert evaluate.main([str(lm_run), f"task.corpus={other}"]) == 2
    err = capsys.readouterr().err
    assert (f"task.corpus={other}: the model cannot take this data: its vocabulary differs from the run's "
            f"({lm_run / 'vocab.json'}): ") in err, err
    assert "not in the model's: 'A', 'C', 'E'" in err, err
