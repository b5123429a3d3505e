"""Sequence classification: one label per sequence. The shared part of the classification tasks
(`rnnbench.tasks.seq_image.SequentialImageTask`, `rnnbench.tasks.text.TextClassificationTask`): the epoch order, the loss,
the metrics, evaluation over a whole split and the memoryless baseline.

Both tasks report `loss` (mean cross-entropy, nats), `accuracy` and per-class accuracy
`acc_class/<label>` over a whole split; main metric `accuracy` (max). Memoryless baseline: the
cross-entropy of predicting the training class priors (the entropy of the training labels);
`describe()` adds the accuracy of always answering the training majority class.

Training order: a seeded shuffle per epoch drawn from a torch.Generator; every example is seen
exactly once per epoch (the last batch may be smaller). `state_dict()` holds the epoch, the position
within it and the generator state at the epoch's start, so a resumed run draws the very same batches.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnbench.tasks.base import Batch, Predict, Task
from rnnbench.tasks.data import DataError


def split_generator(seed: int) -> torch.Generator:
    """The generator of a fixed data split (validation held out, pixel permutation): seeded apart
    from the training seed, so the split stays the same across training seeds."""
    return torch.Generator().manual_seed(seed)


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


class ClassificationTask(Task):
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
