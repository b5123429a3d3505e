"""Sequential images: MNIST / Fashion-MNIST read row by row (28 steps x 28 features) or pixel by
pixel (784 steps x 1), optionally with one fixed random permutation of the pixels (permuted MNIST;
Le, Jaitly & Hinton 2015, "A Simple Way to Initialize Recurrent Networks of Rectified Linear Units").
Loss, metrics, order and baseline: `rnnbench.tasks.classification`; the idx reader: `rnnbench.tasks.data.read_idx`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rnnbench.tasks.base import Batch, BatchShape, IOSpec
from rnnbench.tasks.classification import ClassificationTask, EpochOrder, split_generator
from rnnbench.tasks.data import (IDX_FILES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, DataError, canonical_name,
                        find_idx_file, image_search_dirs, read_idx)

MODES = ("row", "pixel")  # read an image row by row (28 x 28) or pixel by pixel (784 x 1)
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    # Zalando's names, made safe as metric keys ("T-shirt/top" -> "t-shirt_top").
    "fashion-mnist": ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "ankle_boot"],
}


class SequentialImageTask(ClassificationTask):
    """Images as sequences: `mode="row"` gives inputs (28, B, 28), `mode="pixel"` (784, B, 1), pixels
    scaled to [0, 1], targets (B,) class ids; the model returns logits (B, 10).

    `permute=True` applies one fixed permutation of the 784 pixels, drawn from `permute_seed`, before
    the image is read (row mode then reads rows of the permuted image). Validation: `val_fraction` of
    the train file, a split drawn from `split_seed` (so it stays the same across training seeds);
    test: the t10k files. `max_train` / `max_eval` keep only the first examples of the (split)
    training set / of each evaluation split, for fast runs.
    """

    ALLOWED = {"mode": MODES}

    name = "seq_image"

    def __init__(self, data_dir: str | None = None, dataset: str = "fashion-mnist",
                 mode: Literal["row", "pixel"] = "row", permute: bool = False, permute_seed: int = 0,
                 batch_size: int = 64, eval_batch_size: int = 500, val_fraction: float = 0.1,
                 split_seed: int = 0, max_train: int | None = None, max_eval: int | None = None,
                 seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(device)
        if mode not in MODES:
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
        split = torch.randperm(len(train_labels), generator=split_generator(split_seed))
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
        self.pixel_permutation = (torch.randperm(n_pixels, generator=split_generator(permute_seed))
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

    def batch_shape(self) -> BatchShape:
        # steps are the image's (rows or pixels), set by task.mode
        if self.eval_batch_size > self.batch_size:
            return BatchShape(self.seq_len, self.eval_batch_size, "task.mode", "task.eval_batch_size")
        return BatchShape(self.seq_len, self.batch_size, "task.mode")

    def describe(self) -> dict[str, Any]:
        info = {"task": self.name, "dataset": self.dataset, "mode": self.mode, "permute": self.permute,
                "permute_seed": self.permute_seed if self.permute else None, "seq_len": self.seq_len,
                "input_size": self.spec.input_size, "split_seed": self.split_seed,
                "files": {k: str(v) for k, v in self.files.items()}}
        info.update(self._describe_classes(self._labels))
        return info
