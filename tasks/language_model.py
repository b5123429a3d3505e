"""Language modelling: next-token prediction on a corpus, words (PTB, WikiText-2) or characters.

Reported the way the field reports it: perplexity = exp(mean NLL) for words, bits per
character = mean NLL / ln 2 for characters, both over every token of a whole split, the state carried
from window to window as in pytorch/examples' word_language_model.

Corpus formats
- A folder with `train.txt`, `valid.txt`, `test.txt` (PTB / WikiText layout; `ptb.train.txt` and
  `wiki.train.tokens` / `wiki.train.raw` names are accepted too).
- A single text file (tiny-shakespeare style), cut into contiguous train / valid / test ranges of its
  tokens by `train_fraction` and `valid_fraction` (the rest is test).

Tokens
- word level: whitespace-separated tokens, and `<eos>` at the end of every line. An empty (or
  whitespace-only) line still yields one `<eos>` — as pytorch/examples does and as WikiText's blank
  lines between paragraphs are meant to be read. Lines end at "\\n" ("\\r\\n" works: "\\r" is whitespace).
- char level: every character, newlines included (Karpathy's char-rnn).
- Files are read as strict UTF-8: an invalid byte is a DataError naming the file and the byte
  offset; an empty file is a DataError.

Vocabulary: from the training split only. word level: in order of first appearance, plus `<unk>`
appended when the training text has none (PTB and WikiText-2 already contain `<unk>`). char level:
the sorted characters of train, plus `<unk>` only when valid/test contain characters train lacks.
Tokens of valid/test outside the vocabulary map to `<unk>`; their count and rate are reported
(`describe()`: `oov_valid`, `oov_rate_valid`, ...).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnbench.tasks.base import Batch, BatchShape, IOSpec, Predict, Task
from rnnbench.tasks.data import (DATASETS, DataError, canonical_name, missing_file_error, read_text,
                        resolve_data_dir)

EOS = "<eos>"
UNK = "<unk>"
IGNORE_INDEX = -100  # targets that do not count in the loss (F.cross_entropy's default ignore_index)
SPLITS = ("train", "valid", "test")
# File names accepted for each split inside a corpus folder, first match wins.
SPLIT_FILES = {s: (f"{s}.txt", f"ptb.{s}.txt", f"wiki.{s}.tokens", f"wiki.{s}.raw") for s in SPLITS}
SINGLE_FILES = ("input.txt",)
LEVELS = ("char", "word")  # tokens: characters, or whitespace-separated words (also the text task's)


def tokenize(text: str, level: Literal["char", "word"]) -> list[str]:
    """Characters, or whitespace tokens with `<eos>` closing every line (empty lines included)."""
    if level == "char":
        return list(text)
    if level != "word":
        raise ValueError(f"level must be 'char' or 'word', not {level!r}")
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line does not open another one
        lines.pop()
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


class Corpus:
    """Token-id tensors `train`, `valid`, `test` (1-D int64) over a vocabulary built from train.

    `vocab[i]` is token i's string; `index[token]` its id. `oov[split]` counts the valid/test tokens
    that were mapped to `<unk>` because train never contains them.
    """

    def __init__(self, splits: dict[str, list[str]], level: Literal["char", "word"], source: str = ""):
        self.level = level
        self.source = source
        train = splits["train"]
        distinct = set(train)
        if len(distinct) < 2:  # one symbol is predicted with certainty: perplexity 1 measures nothing
            raise DataError(f"{source}: the training split holds {len(distinct)} distinct "
                            f"{'word' if level == 'word' else 'character'}(s) {sorted(distinct)!r}; a language "
                            "model needs at least 2 (with one, every prediction is certain: perplexity 1)")
        if level == "word":
            vocab = list(dict.fromkeys(train))  # first appearance, as pytorch/examples' Dictionary
            if UNK not in vocab:
                vocab.append(UNK)
        else:
            vocab = sorted(set(train))
            seen = set(vocab)
            if any(c not in seen for s in ("valid", "test") for c in splits[s]):
                vocab.append(UNK)
        self.vocab: list[str] = vocab
        self.index: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        unk = self.index.get(UNK, -1)
        self.oov: dict[str, int] = {}
        for split in SPLITS:
            ids = [self.index.get(tok, unk) for tok in splits[split]]
            self.oov[split] = sum(1 for tok in splits[split] if tok not in self.index)
            setattr(self, split, torch.tensor(ids, dtype=torch.int64))

    train: Tensor
    valid: Tensor
    test: Tensor

    def __len__(self) -> int:
        return len(self.vocab)

    def oov_rate(self, split: str) -> float:
        n = len(getattr(self, split))
        return self.oov[split] / n if n else 0.0

    @classmethod
    def from_texts(cls, train: str, valid: str, test: str, level: Literal["char", "word"],
                   source: str = "") -> "Corpus":
        return cls({"train": tokenize(train, level), "valid": tokenize(valid, level),
                    "test": tokenize(test, level)}, level, source)

    @classmethod
    def from_directory(cls, folder: Path | str, level: Literal["char", "word"],
                       dataset: str | None = None) -> "Corpus":
        """A folder holding one file per split (train.txt, valid.txt, test.txt)."""
        folder = Path(folder)
        texts = {}
        for split in SPLITS:
            path = next((folder / n for n in SPLIT_FILES[split] if (folder / n).is_file()), None)
            if path is None:
                raise missing_file_error(f"the {split} split ({' or '.join(SPLIT_FILES[split])})",
                                         [folder], dataset)
            texts[split] = read_text(path)
        return cls.from_texts(texts["train"], texts["valid"], texts["test"], level, str(folder))

    @classmethod
    def from_file(cls, path: Path | str, level: Literal["char", "word"], train_fraction: float = 0.9,
                  valid_fraction: float = 0.05) -> "Corpus":
        """One text file cut into contiguous token ranges: [train | valid | test]."""
        if not (0 < train_fraction and 0 < valid_fraction and train_fraction + valid_fraction < 1):
            raise ValueError("need 0 < train_fraction, 0 < valid_fraction, train + valid < 1; got "
                             f"{train_fraction}, {valid_fraction}")
        tokens = tokenize(read_text(path), level)
        n_train = int(len(tokens) * train_fraction)
        n_valid = int(len(tokens) * valid_fraction)
        splits = {"train": tokens[:n_train], "valid": tokens[n_train:n_train + n_valid],
                  "test": tokens[n_train + n_valid:]}
        for split, toks in splits.items():
            if not toks:
                raise DataError(f"{path}: {len(tokens)} tokens are too few for a non-empty {split} "
                                f"split at fractions {train_fraction}/{valid_fraction}")
        return cls(splits, level, str(path))


def locate_corpus(corpus: str, data_dir: str | os.PathLike | None) -> Path:
    """The file or folder of `corpus`: a known data set name is looked up in the data root
    (`<root>/<folder>`); anything else is a path, as given or else relative to the data root."""
    root = resolve_data_dir(data_dir)
    canonical = canonical_name(corpus)
    if canonical is not None:
        candidates = [root / DATASETS[canonical].folder]
    else:
        candidates = [Path(corpus).expanduser(), root / corpus]
    for path in candidates:
        if path.exists():
            return path
    raise missing_file_error(f"corpus {corpus!r}", [p.absolute() for p in candidates],
                             canonical or corpus)


def _is_split_folder(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in SPLIT_FILES["train"])


@lru_cache(maxsize=4)
def _load_corpus(path: Path, level: str, train_fraction: float, valid_fraction: float,
                 mtime: float, dataset: str | None) -> Corpus:
    # mtime is in the key so an edited file is read again; the tensors are never written to.
    if _is_split_folder(path):
        return Corpus.from_directory(path, level, dataset)  # type: ignore[arg-type]
    if path.is_dir():
        single = next((path / n for n in SINGLE_FILES if (path / n).is_file()), None)
        if single is None:
            raise missing_file_error(f"a corpus ({', '.join(SPLIT_FILES['train'] + SINGLE_FILES)})",
                                     [path], dataset)
        path = single
    return Corpus.from_file(path, level, train_fraction, valid_fraction)  # type: ignore[arg-type]


def batchify(data: Tensor, batch_size: int) -> Tensor:
    """(N,) -> (N // B, B): B parallel streams, stream b = data[b*L : (b+1)*L] (the tail is dropped).

    As pytorch/examples' word_language_model: the streams are read in parallel, one window of rows at a
    time, so the state at the end of a window is the right start for the next one.
    """
    n_rows = data.numel() // batch_size
    return data[: n_rows * batch_size].view(batch_size, n_rows).t().contiguous()  # (L, B)


@dataclass
class LMBatch(Batch):
    """A training window. `state_carry_steps`: with k1 < k2 the next window starts k1 steps after this
    one, so the state to carry into it is the state after that many steps of this window (from the
    state passed in), not its final state. None: carry the final state (the k1 == k2 case)."""

    state_carry_steps: int | None = None


class LanguageModelTask(Task):
    """Next-token prediction with truncated BPTT over B parallel streams of a corpus.

    Truncated BPTT(k1, k2) (Williams & Peng 1990; the lecture notes: "run the RNN forward k1 time
    steps, propagate backward for k2 time steps"): every k1 new steps, the gradient of those k1 steps'
    losses is propagated back through the last k2 = `bptt` steps. Here each training window's inputs
    span k2 steps ending at the k1 new ones; the targets of its first k2 - k1 steps are set to
    IGNORE_INDEX (-100), so the loss counts only the last k1 targets, and every target of the stream
    is counted exactly once per epoch. Windows overlap by k2 - k1 steps, so the state to carry into
    the next window is the one after `batch.state_carry_steps` steps (see LMBatch). k1 = k2 (the
    default, k1=None) gives pytorch/examples' non-overlapping windows of `bptt` steps, where the
    carried state is simply the final one.

    Evaluation always uses non-overlapping windows of `bptt` steps over the whole split with the
    state carried through, `eval_batch_size` streams (the < B trailing tokens are dropped).
    """

    ALLOWED = {"level": LEVELS}  # or None: word for a folder of splits, char for one file

    name = "lm"

    def __init__(self, data_dir: str | None = None, corpus: str = "tinyshakespeare",
                 level: Literal["char", "word"] | None = None, bptt: int = 35, batch_size: int = 20,
                 eval_batch_size: int = 10, k1: int | None = None, train_fraction: float = 0.9,
                 valid_fraction: float = 0.05, max_train_tokens: int | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", corpus_object: Corpus | None = None):
        """`corpus`: a data set name (tinyshakespeare, ptb, wikitext-2, wikitext-2-raw) looked up in the
        data dir, or a path to a corpus folder or text file. `level`: None means word for a folder of
        splits and char for a single file. `seed` is recorded only: the stream order is fixed.
        `corpus_object`: an already built Corpus (tests, notebooks) instead of reading `corpus`."""
        super().__init__(device)
        k1 = bptt if k1 is None else k1
        if not (1 <= k1 <= bptt):
            raise ValueError(f"need 1 <= k1 <= bptt, got k1={k1}, bptt={bptt}")
        if corpus_object is None:
            path = locate_corpus(corpus, data_dir)
            if level is None:
                level = "word" if _is_split_folder(path) else "char"
            corpus_object = _load_corpus(path.resolve(), level, float(train_fraction),
                                         float(valid_fraction), path.stat().st_mtime,
                                         canonical_name(corpus))
        self.corpus = corpus_object
        self.corpus_name = corpus
        self.level = self.corpus.level
        self.bptt, self.k1 = bptt, k1
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed = seed

        train = self.corpus.train
        if max_train_tokens is not None:
            train = train[:max_train_tokens]
        self.train_tokens = train
        self.train_data = batchify(train, batch_size)  # (L, B)
        if self.train_data.shape[0] < 2:
            raise DataError(f"{self.corpus.source}: {train.numel()} training tokens are too few for "
                            f"batch_size {batch_size}")
        self.windows_per_epoch = math.ceil((self.train_data.shape[0] - 1) / k1)
        self.epoch = 0  # completed passes over the training stream
        self._window = 0  # index of the next training window within the epoch
        self._eval_data: dict[str, Tensor] = {}

        vocab = len(self.corpus)
        self.spec = IOSpec(input_kind="tokens", input_size=vocab, output_size=vocab,
                           output_kind="per_step", loss_kind="classification", stateful=True)
        self.main_metric = "perplexity" if self.level == "word" else "bits_per_char"
        self.main_metric_mode = "min"

    # ---- training stream -------------------------------------------------------------------------

    def _window_bounds(self, j: int) -> tuple[int, int, int]:
        """(start, first counted step, end) of training window j, in rows of `train_data`."""
        n_targets = self.train_data.shape[0] - 1
        new = j * self.k1
        return max(0, new - (self.bptt - self.k1)), new, min(new + self.k1, n_targets)

    def train_batch(self) -> LMBatch:
        j = self._window
        start, new, end = self._window_bounds(j)
        inputs = self.train_data[start:end]  # (T, B)
        targets = self.train_data[start + 1:end + 1].clone()  # (T, B), the next tokens
        targets[: new - start] = IGNORE_INDEX  # context steps: backpropagated through, not scored
        carry = None
        if j + 1 < self.windows_per_epoch:
            next_start = self._window_bounds(j + 1)[0]
            if next_start - start != end - start:
                carry = next_start - start
        self._window += 1
        if self._window == self.windows_per_epoch:
            self._window = 0
            self.epoch += 1
        return LMBatch(inputs.to(self.device), targets.to(self.device), None, reset_state=(j == 0),
                       state_carry_steps=carry)

    def vocabulary(self) -> list[str]:
        return list(self.corpus.vocab)

    @property
    def position(self) -> int:
        """Index of the next training window within the current epoch."""
        return self._window

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "window": self._window, "windows_per_epoch": self.windows_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("windows_per_epoch", self.windows_per_epoch) != self.windows_per_epoch:
            raise ValueError(f"checkpoint has {state['windows_per_epoch']} windows per epoch, this task "
                             f"{self.windows_per_epoch}: not the same corpus / batch size / bptt")
        self.epoch, self._window = int(state["epoch"]), int(state["window"])

    # ---- loss and metrics ------------------------------------------------------------------------

    def _check(self, outputs: Tensor, targets: Tensor) -> None:
        if outputs.dim() != 3 or outputs.shape[:2] != targets.shape:
            raise ValueError(f"outputs must be (T, B, vocab) for targets {tuple(targets.shape)}, got "
                             f"{tuple(outputs.shape)}")

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean cross-entropy (nats) over the counted targets of the window; outputs are logits."""
        self._check(outputs, batch.targets)
        return F.cross_entropy(outputs.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX)

    def _metrics(self, nll_sum: float, correct: int, tokens: int) -> dict[str, float]:
        loss = nll_sum / max(tokens, 1)
        metrics = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                   "accuracy": correct / max(tokens, 1), "tokens": float(tokens)}
        if self.level == "char":
            metrics["bits_per_char"] = loss / math.log(2)
        return metrics

    @staticmethod
    def _sums(outputs: Tensor, targets: Tensor) -> tuple[float, int, int]:
        logits, flat = outputs.detach().flatten(0, 1), targets.flatten()
        counted = flat != IGNORE_INDEX
        nll = F.cross_entropy(logits.float(), flat, ignore_index=IGNORE_INDEX, reduction="sum")
        correct = int((logits.argmax(-1)[counted] == flat[counted]).sum())
        return float(nll), correct, int(counted.sum())

    def batch_metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        self._check(outputs, batch.targets)
        return self._metrics(*self._sums(outputs, batch.targets))

    def eval_stream(self, split: str) -> Tensor:
        """The split batchified into `eval_batch_size` streams, (L, B)."""
        key = {"val": "valid", "valid": "valid", "validation": "valid", "test": "test",
               "train": "train"}.get(split)
        if key is None:
            raise ValueError(f"unknown split {split!r}: use 'val' or 'test'")
        if key not in self._eval_data:
            data = self.train_tokens if key == "train" else getattr(self.corpus, key)
            stream = batchify(data, self.eval_batch_size)
            if stream.shape[0] < 2:
                raise DataError(f"{self.corpus.source}: the {split} split has {data.numel()} tokens, too "
                                f"few for eval_batch_size {self.eval_batch_size}")
            self._eval_data[key] = stream
        return self._eval_data[key]

    def evaluate(self, predict: Predict, split: str = "val") -> dict[str, float]:
        """Token-weighted mean NLL over the whole split, state carried from window to window:
        loss (nats), perplexity, accuracy (top-1 next token), tokens, and bits_per_char (char)."""
        data = self.eval_stream(split)
        nll_sum, correct, tokens = 0.0, 0, 0
        state = None
        with torch.no_grad():
            for i in range(0, data.shape[0] - 1, self.bptt):
                end = min(i + self.bptt, data.shape[0] - 1)
                batch = Batch(data[i:end].to(self.device), data[i + 1:end + 1].to(self.device), None,
                              reset_state=(i == 0))
                outputs, state = predict(batch, state)
                self._check(outputs, batch.targets)
                s = self._sums(outputs, batch.targets)
                nll_sum, correct, tokens = nll_sum + s[0], correct + s[1], tokens + s[2]
        return self._metrics(nll_sum, correct, tokens)

    # ---- baseline and description ----------------------------------------------------------------

    @property
    def memoryless_baseline(self) -> float:
        """Entropy (nats) of the training split's unigram distribution: the cross-entropy on train of
        the best predictor that ignores all context."""
        counts = torch.bincount(self.train_tokens, minlength=len(self.corpus)).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())

    def batch_shape(self) -> BatchShape:
        if self.eval_batch_size > self.batch_size:
            return BatchShape(self.bptt, self.eval_batch_size, "task.bptt", "task.eval_batch_size")
        return BatchShape(self.bptt, self.batch_size, "task.bptt")

    def describe(self) -> dict[str, Any]:
        baseline = self.memoryless_baseline
        info: dict[str, Any] = {
            "task": self.name, "corpus": self.corpus_name, "source": self.corpus.source,
            "level": self.level, "vocab_size": len(self.corpus),
            "bptt": self.bptt, "k1": self.k1, "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size, "windows_per_epoch": self.windows_per_epoch,
            "train_tokens_used": int(self.train_tokens.numel()),
            "memoryless_baseline": baseline, "unigram_perplexity": math.exp(baseline),
        }
        for split in SPLITS:
            info[f"tokens_{split}"] = int(getattr(self.corpus, split).numel())
        for split in ("valid", "test"):
            info[f"oov_{split}"] = self.corpus.oov[split]
            info[f"oov_rate_{split}"] = self.corpus.oov_rate(split)
        if self.level == "char":
            info["unigram_bits_per_char"] = baseline / math.log(2)
        return info
