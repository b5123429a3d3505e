"""Text classification: labelled texts from CSV / TSV / JSONL files or the aclImdb folder layout
(Maas et al. 2011), as padded token-id batches with their true lengths. Loss, metrics, order and
baseline: `rnnbench.tasks.classification`; the file readers: `rnnbench.tasks.data.read_examples`,
`rnnbench.tasks.data.read_aclimdb_split`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from rnnbench.tasks.base import Batch, IOSpec
from rnnbench.tasks.classification import ClassificationTask, EpochOrder, split_generator
from rnnbench.tasks.data import (DATASETS, DataError, Example, canonical_name, missing_file_error,
                                 read_aclimdb_split, read_examples, resolve_data_dir)
from rnnbench.tasks.language_model import LEVELS

PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of every text vocabulary
EMPTY_TEXT = ("error", "skip")  # what an empty text is: a DataError, or dropped and counted


def sort_labels(labels: set[str]) -> list[str]:
    """Class order: numeric when every label is an integer, else alphabetical."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


TEXT_SPLIT_NAMES = {"train": ("train",), "val": ("valid", "val", "dev", "validation"), "test": ("test",)}
TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


class TextClassificationTask(ClassificationTask):
    """Labelled texts as token-id sequences: inputs (T_max, B) int64 padded with `<pad>` = 0, lengths
    (B,) the true lengths, targets (B,) class ids; the model returns logits (B, classes).

    Data: `dataset` names a folder (a data set name such as "aclImdb" looked up in the data root, or
    a path) holding either the aclImdb layout (train/pos, train/neg, test/pos, test/neg) or files
    `train.{csv,tsv,jsonl}`, optional `valid|val|dev.*`, `test.*`; or give `train_file` (and
    `valid_file`, `test_file`) directly. Without a validation file, `val_fraction` of train is held
    out by a split drawn from `split_seed`; without a test file, `test_fraction` of train likewise
    (after the validation part). Labels (strings or ints) become class ids in sorted order
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

    ALLOWED = {"level": LEVELS, "empty_text": EMPTY_TEXT}

    name = "text"

    def __init__(self, data_dir: str | None = None, dataset: str | None = "aclImdb",
                 train_file: str | None = None, valid_file: str | None = None,
                 test_file: str | None = None, format: str | None = None,
                 text_column: str | int = "text", label_column: str | int = "label",
                 level: Literal["word", "char"] = "word", lowercase: bool = True, min_freq: int = 1,
                 max_vocab: int | None = None, max_len: int | None = None, batch_size: int = 32,
                 eval_batch_size: int = 128, bucket: bool = False, bucket_chunk: int = 50,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, split_seed: int = 0,
                 empty_text: Literal["error", "skip"] = "error", max_train: int | None = None,
                 max_eval: int | None = None, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(device)
        if level not in LEVELS:
            raise ValueError(f"level must be 'word' or 'char', not {level!r}")
        if empty_text not in EMPTY_TEXT:
            raise ValueError(f"empty_text must be 'error' or 'skip', not {empty_text!r}")
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= fraction < 1:
                raise ValueError(f"{key}={fraction} is not allowed: must be in [0, 1)")
        self.level, self.lowercase, self.max_len = level, lowercase, max_len
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.split_seed, self.empty_text = seed, split_seed, empty_text
        self.dataset = dataset

        raw = self._read_splits(data_dir, dataset, train_file, valid_file, test_file, format,
                                text_column, label_column)
        self.skipped_empty = {}
        for split in list(raw):
            raw[split] = self._drop_empty(split, raw[split])
        # A split without its file is held out of train: one permutation drawn from split_seed (the same
        # for every training seed), validation first, then test, so the validation split does not depend
        # on whether a test file is given.
        self.held_out = {split: fraction for split, fraction in (("val", val_fraction), ("test", test_fraction))
                         if split not in raw}
        if sum(self.held_out.values()) >= 1:
            raise ValueError(f"val_fraction + test_fraction = {sum(self.held_out.values())} leaves no training "
                             "examples: their sum must be < 1")
        if self.held_out:
            train = raw["train"]
            order = torch.randperm(len(train), generator=split_generator(split_seed)).tolist()
            start = 0
            for split, fraction in self.held_out.items():
                n = int(round(fraction * len(train)))
                raw[split] = [train[i] for i in sorted(order[start:start + n])]
                start += n
            raw["train"] = [train[i] for i in sorted(order[start:])]
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

    def vocabulary(self) -> list[str]:
        return list(self.vocab)

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
        inputs = pad_sequence([self._ids[split][i] for i in indices.tolist()], padding_value=0)  # (T_max, B), <pad> = 0
        return Batch(inputs.to(self.device), self._labels[split][indices].to(self.device), lengths)

    def describe(self) -> dict[str, Any]:
        info = {"task": self.name, "source": self.source, "level": self.level,
                "lowercase": self.lowercase, "vocab_size": len(self.vocab), "max_len": self.max_len,
                "bucket": self.bucket, "split_seed": self.split_seed,
                "held_out_of_train": self.held_out}
        for split in self._labels:
            info[f"unk_rate_{split}"] = self.unk_rate[split]
            info[f"mean_length_{split}"] = float(self._lengths[split].float().mean())
            info[f"skipped_empty_{split}"] = self.skipped_empty.get(split, 0)
        info.update(self._describe_classes(self._labels))
        return info
