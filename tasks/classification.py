"""Sequence classification: one label per sequence, read from real data.

- `SequentialImageTask` ("seq_image"): MNIST / Fashion-MNIST read row by row (28 steps x 28 features)
  or pixel by pixel (784 steps x 1), optionally with one fixed random permutation of the pixels
  (permuted MNIST; Le, Jaitly & Hinton 2015, "A Simple Way to Initialize Recurrent Networks of
  Rectified Linear Units").
- `TextClassificationTask` ("text"): labelled texts from CSV / TSV / JSONL files or the aclImdb
  folder layout (Maas et al. 2011), as padded token-id batches with their true lengths.

Both report `loss` (mean cross-entropy, nats), `accuracy` and per-class accuracy `acc_class/<label>`
over a whole split; main metric `accuracy` (max). Memoryless baseline: the cross-entropy of
predicting the training class priors (the entropy of the training labels); `describe()` adds the
accuracy of always answering the training majority class.

Training order (both tasks): a seeded shuffle per epoch drawn from a torch.Generator; every example
is seen exactly once per epoch (the last batch may be smaller). `state_dict()` holds the epoch, the
position within it and the generator state at the epoch's start, so a resumed run draws the very
same batches.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tasks.base import Batch, IOSpec, Predict, Task
from tasks.data import (DATASETS, DataError, canonical_name, decode_utf8, missing_file_error,
                        open_maybe_gzip, read_bytes, resolve_data_dir)

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of every text vocabulary
SYSTEM_DATASETS = Path("/usr/share/datasets")  # Debian's dataset-* packages install here


def _split_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Shared: epoch order, loss, metrics, evaluation, baseline.


class EpochOrder:
    """Batches of example indices, a fresh seeded shuffle every epoch.

    With `lengths` and `bucket_chunk`, the shuffled examples are cut into chunks of
    `bucket_chunk * batch_size`, sorted by length within each chunk (so a batch holds sequences of
    similar length and little padding), cut into batches, and the batches are shuffled.
    """

    def __init__(self, n: int, batch_size: int, seed: int, lengths: Tensor | None = None,
                 bucket_chunk: int | None = None):
        if n < 1:
            raise DataError("no training examples")
        self.n, self.batch_size = n, batch_size
        self.lengths, self.bucket_chunk = lengths, bucket_chunk
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0  # completed epochs
        self.position = 0  # index of the next batch within the epoch
        self._batches: list[Tensor] | None = None
        self._epoch_start_state: Tensor | None = None

    def _draw_epoch(self) -> list[Tensor]:
        self._epoch_start_state = self.generator.get_state()
        perm = torch.randperm(self.n, generator=self.generator)
        if self.lengths is None or not self.bucket_chunk:
            return list(perm.split(self.batch_size))
        batches: list[Tensor] = []
        for chunk in perm.split(self.bucket_chunk * self.batch_size):
            order = torch.argsort(self.lengths[chunk], descending=True, stable=True)
            batches.extend(chunk[order].split(self.batch_size))
        shuffle = torch.randperm(len(batches), generator=self.generator)
        return [batches[i] for i in shuffle.tolist()]

    @property
    def batches_per_epoch(self) -> int:
        if self.lengths is None or not self.bucket_chunk:
            return math.ceil(self.n / self.batch_size)
        chunk = self.bucket_chunk * self.batch_size
        full, rest = divmod(self.n, chunk)
        return full * math.ceil(chunk / self.batch_size) + math.ceil(rest / self.batch_size)

    def next(self) -> Tensor:
        if self._batches is None:
            self._batches = self._draw_epoch()
        indices = self._batches[self.position]
        self.position += 1
        if self.position == len(self._batches):
            self.epoch, self.position, self._batches = self.epoch + 1, 0, None
        return indices

    def state_dict(self) -> dict[str, Any]:
        start = self.generator.get_state() if self._batches is None else self._epoch_start_state
        return {"epoch": self.epoch, "position": self.position, "generator": start.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._draw_epoch() if self.position > 0 else None


class _ClassificationTask(Task):
    """Loss, metrics, evaluation and baseline of one-label-per-sequence classification.

    Subclasses fill `class_names`, `train_labels` (the labels trained on), `_order` (EpochOrder) and
    implement `_batch(split, indices)` and `_split_size(split)`.
    """

    main_metric = "accuracy"
    main_metric_mode = "max"
    class_names: list[str]
    train_labels: Tensor
    eval_batch_size: int
    _order: EpochOrder

    def _batch(self, split: str, indices: Tensor) -> Batch:
        raise NotImplementedError

    def _split_size(self, split: str) -> int:
        raise NotImplementedError

    def _eval_indices(self, split: str) -> Tensor:
        return torch.arange(self._split_size(split))

    @staticmethod
    def _split_key(split: str) -> str:
        key = {"val": "val", "valid": "val", "validation": "val", "test": "test", "train": "train"}.get(split)
        if key is None:
            raise ValueError(f"unknown split {split!r}: use 'val' or 'test'")
        return key

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def epoch(self) -> int:
        return self._order.epoch

    @property
    def batches_per_epoch(self) -> int:
        return self._order.batches_per_epoch

    def train_batch(self) -> Batch:
        return self._batch("train", self._order.next())

    def _check(self, outputs: Tensor, batch: Batch) -> None:
        expected = (batch.targets.shape[0], self.num_classes)
        if tuple(outputs.shape) != expected:
            raise ValueError(f"outputs must be (B, classes) = {expected}, got {tuple(outputs.shape)}")

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Mean cross-entropy over the batch's sequences; outputs are logits (B, classes)."""
        self._check(outputs, batch)
        return F.cross_entropy(outputs, batch.targets)

    def batch_metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        self._check(outputs, batch)
        outputs = outputs.detach()
        return {"loss": float(F.cross_entropy(outputs.float(), batch.targets)),
                "accuracy": float((outputs.argmax(-1) == batch.targets).float().mean())}

    def evaluate(self, predict: Predict, split: str = "val") -> dict[str, float]:
        """loss, accuracy, `acc_class/<label>` (accuracy on that class's examples) and `examples`."""
        key = self._split_key(split)
        indices = self._eval_indices(key)
        if indices.numel() == 0:
            raise DataError(f"the {split} split of task {self.name!r} is empty")
        nll, correct = 0.0, 0
        per_class_total = torch.zeros(self.num_classes, dtype=torch.int64)
        per_class_correct = torch.zeros(self.num_classes, dtype=torch.int64)
        with torch.no_grad():
            for chunk in indices.split(self.eval_batch_size):
                batch = self._batch(key, chunk)
                outputs, _ = predict(batch, None)
                self._check(outputs, batch)
                targets = batch.targets
                nll += float(F.cross_entropy(outputs.float(), targets, reduction="sum"))
                hit = (outputs.argmax(-1) == targets).cpu()
                correct += int(hit.sum())
                per_class_total += torch.bincount(targets.cpu(), minlength=self.num_classes)
                per_class_correct += torch.bincount(targets.cpu()[hit], minlength=self.num_classes)
        n = indices.numel()
        metrics = {"loss": nll / n, "accuracy": correct / n, "examples": float(n)}
        for c, name in enumerate(self.class_names):
            if per_class_total[c] > 0:
                metrics[f"acc_class/{name}"] = float(per_class_correct[c]) / float(per_class_total[c])
        return metrics

    def _class_counts(self, labels: Tensor) -> Tensor:
        return torch.bincount(labels, minlength=self.num_classes)

    @property
    def memoryless_baseline(self) -> float:
        """Entropy (nats) of the training labels: the loss of always predicting the class priors."""
        counts = self._class_counts(self.train_labels).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())

    def solved(self, metrics: dict[str, float]) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return self._order.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._order.load_state_dict(state)

    def _describe_classes(self, split_labels: dict[str, Tensor]) -> dict[str, Any]:
        train_counts = self._class_counts(self.train_labels)
        majority = int(train_counts.argmax())
        info: dict[str, Any] = {
            "num_classes": self.num_classes, "class_names": list(self.class_names),
            "memoryless_baseline": self.memoryless_baseline,
            "majority_class": self.class_names[majority],
            "train_class_counts": train_counts.tolist(),
            "batches_per_epoch": self.batches_per_epoch,
        }
        for split, labels in split_labels.items():
            info[f"examples_{split}"] = int(labels.numel())
            if labels.numel():
                info[f"majority_accuracy_{split}"] = float((labels == majority).float().mean())
        return info


# --------------------------------------------------------------------------------------------------
# Sequential images (MNIST format).

IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    # Zalando's names, made safe as metric keys ("T-shirt/top" -> "t-shirt_top").
    "fashion-mnist": ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "ankle_boot"],
}


def read_idx(path: Path | str, expected_magic: int | None = None) -> np.ndarray:
    """An idx file (LeCun's MNIST format; gzipped or raw) as a uint8 array: (N, rows, cols) or (N,).

    Header: a big-endian int32 magic (2051 images: 0x0803 = unsigned bytes, 3 dimensions; 2049
    labels: 0x0801, 1 dimension), then one big-endian int32 per dimension, then the bytes.
    """
    path = Path(path)
    data = open_maybe_gzip(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated idx file ({len(data)} bytes, no header)")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        kind = {IDX_IMAGES_MAGIC: "images", IDX_LABELS_MAGIC: "labels"}.get(expected_magic, "idx")
        raise DataError(f"{path}: wrong magic number {magic} (expected {expected_magic} for an idx "
                        f"{kind} file); is this the right file, and not damaged?")
    if magic >> 8 != 0x08:
        raise DataError(f"{path}: magic number {magic} is not an unsigned-byte idx file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated idx file (header needs {header} bytes, has {len(data)})")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    size = int(np.prod(dims))
    if len(data) < header + size:
        raise DataError(f"{path}: truncated idx file: dimensions {dims} need {header + size} bytes, "
                        f"the file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(dims)


def image_search_dirs(dataset: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Where the idx files of `dataset` are looked for, in order: the path itself if `dataset` is an
    existing folder; else `<data root>/<dataset>` (data_dir, $RNNBENCH_DATA or ~/.cache/rnnbench/data),
    then `/usr/share/datasets/<dataset>` (Debian's dataset-fashion-mnist package)."""
    given = Path(dataset).expanduser()
    if canonical_name(dataset) is None and given.is_dir():
        return [given]
    folder = DATASETS[canonical_name(dataset)].folder if canonical_name(dataset) else dataset
    return [resolve_data_dir(data_dir) / folder, SYSTEM_DATASETS / folder]


def find_idx_file(name: str, dirs: list[Path], dataset: str) -> Path:
    """The first of `<dir>/<name>.gz`, `<dir>/<name>` over `dirs`; else a DataError listing them."""
    tried = [d / f for d in dirs for f in (name + ".gz", name)]
    for path in tried:
        if path.is_file():
            return path
    raise missing_file_error(f"{name}(.gz) of {dataset}", tried, dataset)


class SequentialImageTask(_ClassificationTask):
    """Images as sequences: `mode="row"` gives inputs (28, B, 28), `mode="pixel"` (784, B, 1), pixels
    scaled to [0, 1], targets (B,) class ids; the model returns logits (B, 10).

    `permute=True` applies one fixed permutation of the 784 pixels, drawn from `permute_seed`, before
    the image is read (row mode then reads rows of the permuted image). Validation: `val_fraction` of
    the train file, a split drawn from `split_seed` (so it stays the same across training seeds);
    test: the t10k files. `max_train` / `max_eval` keep only the first examples of the (split)
    training set / of each evaluation split, for fast runs.
    """

    name = "seq_image"

    def __init__(self, data_dir: str | None = None, dataset: str = "fashion-mnist",
                 mode: Literal["row", "pixel"] = "row", permute: bool = False, permute_seed: int = 0,
                 batch_size: int = 64, eval_batch_size: int = 500, val_fraction: float = 0.1,
                 split_seed: int = 0, max_train: int | None = None, max_eval: int | None = None,
                 seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(device)
        if mode not in ("row", "pixel"):
            raise ValueError(f"mode must be 'row' or 'pixel', not {mode!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.dataset, self.mode, self.permute = dataset, mode, permute
        self.permute_seed, self.seed, self.split_seed = permute_seed, seed, split_seed
        self.batch_size, self.eval_batch_size, self.val_fraction = batch_size, eval_batch_size, val_fraction

        dirs = image_search_dirs(dataset, data_dir)
        self.files: dict[str, Path] = {}
        arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split, (images_name, labels_name) in IDX_FILES.items():
            images_path = find_idx_file(images_name, dirs, dataset)
            labels_path = find_idx_file(labels_name, dirs, dataset)
            images = read_idx(images_path, IDX_IMAGES_MAGIC)
            labels = read_idx(labels_path, IDX_LABELS_MAGIC)
            if len(images) != len(labels):
                raise DataError(f"{images_path} has {len(images)} images but {labels_path} has "
                                f"{len(labels)} labels")
            self.files[f"{split}_images"], self.files[f"{split}_labels"] = images_path, labels_path
            arrays[split] = images, labels
        self.image_shape = tuple(arrays["train"][0].shape[1:])  # (28, 28)
        n_pixels = int(np.prod(self.image_shape))

        # Validation from the train file: a fixed split, independent of the training seed.
        train_images, train_labels = arrays["train"]
        split = torch.randperm(len(train_labels), generator=_split_generator(split_seed))
        n_val = int(round(val_fraction * len(train_labels)))
        chosen = {"val": split[:n_val], "train": split[n_val:]}
        if max_train is not None:
            chosen["train"] = chosen["train"][:max_train]
        if max_eval is not None:
            chosen["val"] = chosen["val"][:max_eval]
        all_images = torch.from_numpy(train_images.reshape(len(train_images), n_pixels).copy())  # uint8
        all_labels = torch.from_numpy(train_labels.astype(np.int64))
        self._images: dict[str, Tensor] = {s: all_images[i] for s, i in chosen.items()}  # (N, 784) uint8
        self._labels: dict[str, Tensor] = {s: all_labels[i] for s, i in chosen.items()}
        test_images, test_labels = arrays["test"]
        n_test = len(test_labels) if max_eval is None else min(max_eval, len(test_labels))
        self._images["test"] = torch.from_numpy(test_images[:n_test].reshape(n_test, n_pixels).copy())
        self._labels["test"] = torch.from_numpy(test_labels[:n_test].astype(np.int64))

        names = CLASS_NAMES.get(canonical_name(dataset) or "", [])
        top = max(int(self._labels[s].max()) for s in self._labels if self._labels[s].numel()) + 1
        self.class_names = names + [str(c) for c in range(len(names), top)]
        self.train_labels = self._labels["train"]
        self.pixel_permutation = (torch.randperm(n_pixels, generator=_split_generator(permute_seed))
                                  if permute else None)
        self._order = EpochOrder(len(self.train_labels), batch_size, seed)

        steps, features = (self.image_shape[0], self.image_shape[1]) if mode == "row" else (n_pixels, 1)
        self.seq_len = steps
        self.spec = IOSpec(input_kind="continuous", input_size=features, output_size=self.num_classes,
                           output_kind="sequence", loss_kind="classification")

    def _split_size(self, split: str) -> int:
        return len(self._labels[split])

    def sequences(self, images: Tensor) -> Tensor:
        """uint8 images (B, 784) -> float sequences: (28, B, 28) by rows or (784, B, 1) by pixels."""
        x = images.float() / 255.0  # (B, 784) in [0, 1]
        if self.pixel_permutation is not None:
            x = x[:, self.pixel_permutation]
        if self.mode == "row":
            rows, cols = self.image_shape
            return x.view(-1, rows, cols).transpose(0, 1).contiguous()  # (rows, B, cols)
        return x.t().unsqueeze(-1).contiguous()  # (784, B, 1)

    def _batch(self, split: str, indices: Tensor) -> Batch:
        inputs = self.sequences(self._images[split][indices])
        return Batch(inputs.to(self.device), self._labels[split][indices].to(self.device))

    def describe(self) -> dict[str, Any]:
        info = {"task": self.name, "dataset": self.dataset, "mode": self.mode, "permute": self.permute,
                "permute_seed": self.permute_seed if self.permute else None, "seq_len": self.seq_len,
                "input_size": self.spec.input_size, "split_seed": self.split_seed,
                "files": {k: str(v) for k, v in self.files.items()}}
        info.update(self._describe_classes(self._labels))
        return info


# --------------------------------------------------------------------------------------------------
# Text classification.


@dataclass
class Example:
    text: str
    label: str
    where: str  # "file:line" for error messages


def read_examples(path: Path, fmt: str, text_column: str | int, label_column: str | int) -> list[Example]:
    """Labelled texts from a CSV (header row), TSV (header row, no quoting) or JSONL file.

    Integer columns read CSV/TSV files without a header row, by position. Labels become strings;
    `[1, "1"]` are the same label.
    """
    text = decode_utf8(read_bytes(path), path)
    examples: list[Example] = []
    if fmt == "jsonl":
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: not valid JSON ({e.msg})") from e
            if not isinstance(record, dict) or text_column not in record or label_column not in record:
                raise DataError(f"{path}:{number}: a JSON object with keys {text_column!r} and "
                                f"{label_column!r} expected, got {str(record)[:80]!r}")
            if not isinstance(record[text_column], str):
                raise DataError(f"{path}:{number}: {text_column!r} must be a string")
            examples.append(Example(record[text_column], str(record[label_column]), f"{path}:{number}"))
        return examples
    if fmt not in ("csv", "tsv"):
        raise ValueError(f"unknown format {fmt!r}: csv, tsv, jsonl or aclimdb")
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    positional = isinstance(text_column, int) and isinstance(label_column, int)
    if positional:
        t_col, l_col = text_column, label_column
    else:
        header = next(reader, None) or []
        missing = [c for c in (text_column, label_column) if c not in header]
        if missing:
            raise DataError(f"{path}: no column {', '.join(map(repr, missing))} in the header row "
                            f"(columns: {header})")
        t_col, l_col = header.index(text_column), header.index(label_column)
    try:
        for row in reader:
            if not row:
                continue
            if max(t_col, l_col) >= len(row):
                raise DataError(f"{path}:{reader.line_num}: {len(row)} fields, need column "
                                f"{max(t_col, l_col)}")
            examples.append(Example(row[t_col], row[l_col].strip(), f"{path}:{reader.line_num}"))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({e})") from e
    return examples


def read_aclimdb_split(folder: Path) -> list[Example]:
    """aclImdb's `<split>/pos/*.txt` and `<split>/neg/*.txt`, one review a file (label pos / neg)."""
    examples = []
    for label in ("neg", "pos"):
        sub = folder / label
        if not sub.is_dir():
            raise missing_file_error(f"folder {label}/ of the aclImdb layout", [folder], "aclImdb")
        for path in sorted(sub.glob("*.txt")):
            examples.append(Example(decode_utf8(read_bytes(path, allow_empty=True), path), label, str(path)))
    return examples


def sort_labels(labels: set[str]) -> list[str]:
    """Class order: numeric when every label is an integer, else alphabetical."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


TEXT_SPLIT_NAMES = {"train": ("train",), "val": ("valid", "val", "dev", "validation"), "test": ("test",)}
TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


class TextClassificationTask(_ClassificationTask):
    """Labelled texts as token-id sequences: inputs (T_max, B) int64 padded with `<pad>` = 0, lengths
    (B,) the true lengths, targets (B,) class ids; the model returns logits (B, classes).

    Data: `dataset` names a folder (a data set name such as "aclImdb" looked up in the data root, or
    a path) holding either the aclImdb layout (train/pos, train/neg, test/pos, test/neg) or files
    `train.{csv,tsv,jsonl}`, optional `valid|val|dev.*`, `test.*`; or give `train_file` (and
    `valid_file`, `test_file`) directly. Without a validation file, `val_fraction` of train is held
    out by a split drawn from `split_seed`. Labels (strings or ints) become class ids in sorted order
    (numeric if all are integers) from the training labels; a validation/test label never seen in
    train is a DataError listing the allowed labels.

    Empty texts (nothing but whitespace): `empty_text="error"` (default) raises a DataError naming the
    file and line; `"skip"` drops them and counts them (`describe()["skipped_empty_<split>"]`).

    Tokens: `level="word"` (whitespace) or `"char"`, lowercased if `lowercase`. Vocabulary from the
    training examples only: `<pad>` = 0, `<unk>` = 1, then tokens seen >= `min_freq` times, most
    frequent first (ties alphabetical), at most `max_vocab` entries in all (specials included).
    `max_len` keeps the first `max_len` tokens of a text. `bucket=True` batches texts of similar
    length (sorted within chunks of `bucket_chunk` batches, batches shuffled; see EpochOrder).
    Evaluation batches are taken in order of decreasing length (the metrics do not depend on order).
    """

    name = "text"

    def __init__(self, data_dir: str | None = None, dataset: str | None = "aclImdb",
                 train_file: str | None = None, valid_file: str | None = None,
                 test_file: str | None = None, format: str | None = None,
                 text_column: str | int = "text", label_column: str | int = "label",
                 level: Literal["word", "char"] = "word", lowercase: bool = True, min_freq: int = 1,
                 max_vocab: int | None = None, max_len: int | None = None, batch_size: int = 32,
                 eval_batch_size: int = 128, bucket: bool = False, bucket_chunk: int = 50,
                 val_fraction: float = 0.1, split_seed: int = 0,
                 empty_text: Literal["error", "skip"] = "error", max_train: int | None = None,
                 max_eval: int | None = None, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(device)
        if level not in ("word", "char"):
            raise ValueError(f"level must be 'word' or 'char', not {level!r}")
        if empty_text not in ("error", "skip"):
            raise ValueError(f"empty_text must be 'error' or 'skip', not {empty_text!r}")
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.level, self.lowercase, self.max_len = level, lowercase, max_len
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.split_seed, self.empty_text = seed, split_seed, empty_text
        self.dataset = dataset

        raw = self._read_splits(data_dir, dataset, train_file, valid_file, test_file, format,
                                text_column, label_column)
        self.skipped_empty = {}
        for split in list(raw):
            raw[split] = self._drop_empty(split, raw[split])
        if "val" not in raw:  # hold out part of train, the same split for every training seed
            order = torch.randperm(len(raw["train"]), generator=_split_generator(split_seed)).tolist()
            n_val = int(round(val_fraction * len(raw["train"])))
            raw["val"] = [raw["train"][i] for i in sorted(order[:n_val])]
            raw["train"] = [raw["train"][i] for i in sorted(order[n_val:])]
        if not raw["train"]:
            raise DataError(f"no training examples in {self.source}")
        if max_train is not None:
            raw["train"] = raw["train"][:max_train]
        for split in ("val", "test"):
            if max_eval is not None and split in raw:
                raw[split] = raw[split][:max_eval]

        self.class_names = sort_labels({e.label for e in raw["train"]})
        label_index = {label: i for i, label in enumerate(self.class_names)}
        tokens = {split: [self.tokenize(e.text) for e in examples] for split, examples in raw.items()}
        self.vocab = self._build_vocab(tokens["train"], min_freq, max_vocab)
        self.token_index = {tok: i for i, tok in enumerate(self.vocab)}

        self._ids: dict[str, list[Tensor]] = {}
        self._lengths: dict[str, Tensor] = {}
        self._labels: dict[str, Tensor] = {}
        self.unk_rate: dict[str, float] = {}
        for split, examples in raw.items():
            labels = []
            for e in examples:
                if e.label not in label_index:
                    raise DataError(f"{e.where}: label {e.label!r} does not occur in the training "
                                    f"data; allowed labels: {self.class_names}")
                labels.append(label_index[e.label])
            ids = [torch.tensor([self.token_index.get(t, 1) for t in toks[:max_len]], dtype=torch.int64)
                   for toks in tokens[split]]
            self._ids[split] = ids
            self._lengths[split] = torch.tensor([len(x) for x in ids], dtype=torch.int64)
            self._labels[split] = torch.tensor(labels, dtype=torch.int64)
            n_tokens = sum(len(x) for x in ids)
            self.unk_rate[split] = sum(int((x == 1).sum()) for x in ids) / max(n_tokens, 1)
        self.train_labels = self._labels["train"]
        self.bucket = bucket
        self._order = EpochOrder(len(self.train_labels), batch_size, seed,
                                 self._lengths["train"], bucket_chunk if bucket else None)
        self.spec = IOSpec(input_kind="tokens", input_size=len(self.vocab), output_size=self.num_classes,
                           output_kind="sequence", loss_kind="classification")

    # ---- reading ---------------------------------------------------------------------------------

    def _read_splits(self, data_dir, dataset, train_file, valid_file, test_file, fmt, text_column,
                     label_column) -> dict[str, list[Example]]:
        root = resolve_data_dir(data_dir)

        def locate(path: str) -> Path:
            candidates = [Path(path).expanduser(), root / path]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise missing_file_error(f"file {path!r}", [p.absolute() for p in candidates], None)
            return found

        def read(path: Path) -> list[Example]:
            f = fmt or TEXT_FORMATS.get(path.suffix.lower())
            if f is None:
                raise DataError(f"{path}: cannot tell the format from the extension; set format=")
            return read_examples(path, f, text_column, label_column)

        if train_file is not None:
            files = {"train": train_file, "val": valid_file, "test": test_file}
            paths = {s: locate(p) for s, p in files.items() if p is not None}
            self.source = str(paths["train"])
            return {s: read(p) for s, p in paths.items()}

        if dataset is None:
            raise ValueError("give dataset (a folder or data set name) or train_file")
        canonical = canonical_name(dataset)
        candidates = ([root / DATASETS[canonical].folder] if canonical
                      else [Path(dataset).expanduser(), root / dataset])
        folder = next((p for p in candidates if p.is_dir()), None)
        if folder is None:
            raise missing_file_error(f"text data set {dataset!r}", [p.absolute() for p in candidates],
                                     canonical or dataset)
        self.source = str(folder)
        if fmt == "aclimdb" or (fmt is None and (folder / "train" / "pos").is_dir()):
            return {"train": read_aclimdb_split(folder / "train"), "test": read_aclimdb_split(folder / "test")}
        splits: dict[str, list[Example]] = {}
        for split, stems in TEXT_SPLIT_NAMES.items():
            names = [stem + ext for stem in stems for ext in TEXT_FORMATS]
            path = next((folder / n for n in names if (folder / n).is_file()), None)
            if path is None and split == "train":
                raise missing_file_error(f"training file ({' / '.join(names[:4])} ...)", [folder],
                                         canonical or dataset)
            if path is not None:
                splits[split] = read(path)
        return splits

    def _drop_empty(self, split: str, examples: list[Example]) -> list[Example]:
        kept = [e for e in examples if e.text.strip()]
        self.skipped_empty[split] = len(examples) - len(kept)
        if len(kept) != len(examples) and self.empty_text == "error":
            first = next(e for e in examples if not e.text.strip())
            raise DataError(f"{first.where}: empty text ({len(examples) - len(kept)} in the {split} "
                            "split); set empty_text='skip' to drop such examples")
        return kept

    def tokenize(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        return text.split() if self.level == "word" else list(text)

    @staticmethod
    def _build_vocab(texts: list[list[str]], min_freq: int, max_vocab: int | None) -> list[str]:
        counts = Counter(t for toks in texts for t in toks)
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in (PAD, UNK)),
                      key=lambda t: (-counts[t], t))
        if max_vocab is not None:
            kept = kept[: max(max_vocab - 2, 0)]
        return [PAD, UNK] + kept

    # ---- batches ---------------------------------------------------------------------------------

    def _split_size(self, split: str) -> int:
        if split not in self._labels:
            raise DataError(f"task {self.name!r} has no {split} split (source {self.source})")
        return len(self._labels[split])

    def _eval_indices(self, split: str) -> Tensor:
        self._split_size(split)
        return torch.argsort(self._lengths[split], descending=True, stable=True)

    def _batch(self, split: str, indices: Tensor) -> Batch:
        lengths = self._lengths[split][indices]  # (B,)
        inputs = torch.zeros(int(lengths.max()), len(indices), dtype=torch.int64)  # (T_max, B), <pad> = 0
        for b, i in enumerate(indices.tolist()):
            ids = self._ids[split][i]
            inputs[: len(ids), b] = ids
        return Batch(inputs.to(self.device), self._labels[split][indices].to(self.device), lengths)

    def describe(self) -> dict[str, Any]:
        info = {"task": self.name, "source": self.source, "level": self.level,
                "lowercase": self.lowercase, "vocab_size": len(self.vocab), "max_len": self.max_len,
                "bucket": self.bucket, "split_seed": self.split_seed}
        for split in self._labels:
            info[f"unk_rate_{split}"] = self.unk_rate[split]
            info[f"mean_length_{split}"] = float(self._lengths[split].float().mean())
            info[f"skipped_empty_{split}"] = self.skipped_empty.get(split, 0)
        info.update(self._describe_classes(self._labels))
        return info
