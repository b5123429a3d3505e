"""Specification of the classification tasks (tasks/classification.py, seq_image.py, text.py) and their
file readers (tasks/data.py): idx images as sequences, labelled texts, epoch order."""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnbench.tasks.data import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, DataError, read_idx
from rnnbench.tasks.seq_image import SequentialImageTask
from rnnbench.tasks.text import TextClassificationTask

# ---- idx files ----------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = True) -> Path:
    data = idx_bytes(array, magic)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_image_dataset(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0,
                       gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)),
              "train_labels": np.arange(n_train) % 10,
              "t10k_images": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k_labels": (np.arange(n_test) * 3) % 10}
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte", arrays[f"{split}_images"], IDX_IMAGES_MAGIC, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", arrays[f"{split}_labels"], IDX_LABELS_MAGIC, gz)
    return arrays


@pytest.fixture
def image_root(tmp_path, monkeypatch):
    """A data root with a tiny fake Fashion-MNIST, and no system-wide copy to fall back on."""
    monkeypatch.setattr("rnnbench.tasks.data.SYSTEM_DATASETS", tmp_path / "system")
    arrays = make_image_dataset(tmp_path / "data" / "fashion-mnist")
    return tmp_path / "data", arrays


def test_idx_gzip_and_raw_read_the_same(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28))
    gz = read_idx(write_idx(tmp_path / "a", images, IDX_IMAGES_MAGIC, gz=True), IDX_IMAGES_MAGIC)
    raw = read_idx(write_idx(tmp_path / "b", images, IDX_IMAGES_MAGIC, gz=False), IDX_IMAGES_MAGIC)
    assert gz.dtype == np.uint8 and gz.shape == (5, 28, 28)
    assert np.array_equal(gz, raw) and np.array_equal(gz, images)
    labels = read_idx(write_idx(tmp_path / "l", np.arange(7), IDX_LABELS_MAGIC), IDX_LABELS_MAGIC)
    assert labels.tolist() == list(range(7))


def test_idx_wrong_magic_and_truncation_name_the_file(tmp_path):
    labels_file = write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(7), IDX_LABELS_MAGIC)
    with pytest.raises(DataError) as err:
        read_idx(labels_file, IDX_IMAGES_MAGIC)  # a labels file where images are expected
    assert str(labels_file) in str(err.value) and "2049" in str(err.value) and "2051" in str(err.value)

    cut = tmp_path / "cut-images-idx3-ubyte"
    cut.write_bytes(idx_bytes(np.zeros((4, 28, 28)), IDX_IMAGES_MAGIC)[:-10])
    with pytest.raises(DataError, match=r"cut-images-idx3-ubyte: truncated"):
        read_idx(cut, IDX_IMAGES_MAGIC)
    cut_gz = tmp_path / "cut.gz"
    cut_gz.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28)), IDX_IMAGES_MAGIC))[:-30])
    with pytest.raises(DataError, match=r"cut\.gz: damaged or truncated gzip"):
        read_idx(cut_gz, IDX_IMAGES_MAGIC)


def test_row_and_pixel_sequences(image_root):
    root, arrays = image_root
    row = SequentialImageTask(data_dir=str(root), mode="row", val_fraction=0.0, batch_size=8)
    pixel = SequentialImageTask(data_dir=str(root), mode="pixel", val_fraction=0.0, batch_size=8)
    assert (row.spec.input_size, pixel.spec.input_size) == (28, 1)
    assert row.spec.output_kind == "sequence" and row.spec.input_kind == "continuous"
    indices = torch.tensor([3, 0, 7])
    images = torch.from_numpy(arrays["t10k_images"][indices.numpy()]).float() / 255  # (3, 28, 28)
    r, p = row._batch("test", indices), pixel._batch("test", indices)
    assert r.inputs.shape == (28, 3, 28) and p.inputs.shape == (784, 3, 1) and r.lengths is None
    assert torch.allclose(r.inputs, images.permute(1, 0, 2))  # step t = row t
    assert torch.allclose(p.inputs[:, :, 0], images.reshape(3, 784).t())  # step t = pixel t
    assert float(r.inputs.min()) >= 0 and float(r.inputs.max()) <= 1
    assert r.targets.tolist() == arrays["t10k_labels"][[3, 0, 7]].tolist()


def test_permutation_fixed_by_seed_and_is_a_permutation(image_root):
    root, arrays = image_root
    make = lambda seed: SequentialImageTask(data_dir=str(root), mode="pixel", permute=True,  # noqa: E731
                                            permute_seed=seed, val_fraction=0.0)
    a, b, c = make(5), make(5), make(6)
    assert torch.equal(a.pixel_permutation, b.pixel_permutation)
    assert not torch.equal(a.pixel_permutation, c.pixel_permutation)
    assert torch.equal(a.pixel_permutation.sort().values, torch.arange(784))
    batch = a._batch("test", torch.tensor([2]))
    flat = torch.from_numpy(arrays["t10k_images"][2]).float().reshape(784) / 255
    assert torch.allclose(batch.inputs[:, 0, 0], flat[a.pixel_permutation])
    assert a.describe()["permute_seed"] == 5


def test_validation_split_and_limits(image_root):
    root, arrays = image_root
    task = SequentialImageTask(data_dir=str(root), val_fraction=0.25, split_seed=3, max_eval=5)
    again = SequentialImageTask(data_dir=str(root), val_fraction=0.25, split_seed=3, seed=9)
    assert torch.equal(task._labels["val"], again._labels["val"][:5])  # training seed changes nothing
    assert len(again._labels["val"]) == 15 and len(again._labels["train"]) == 45
    all_images = {bytes(x) for x in arrays["train_images"].astype(np.uint8)}
    seen = [bytes(x.numpy()) for s in ("train", "val") for x in again._images[s]]
    assert len(seen) == 60 and set(seen) == all_images  # disjoint, together the whole train file
    assert task.describe()["examples_test"] == 5
    limited = SequentialImageTask(data_dir=str(root), val_fraction=0.25, max_train=10)
    assert limited.describe()["examples_train"] == 10


def test_data_dir_searched_before_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "system"
    monkeypatch.setattr("rnnbench.tasks.data.SYSTEM_DATASETS", system)
    make_image_dataset(system / "fashion-mnist", n_train=30, seed=1)
    task = SequentialImageTask(data_dir=str(tmp_path / "empty"), val_fraction=0.0)
    assert len(task._labels["train"]) == 30  # the fallback
    make_image_dataset(tmp_path / "mine" / "fashion-mnist", n_train=40, gz=False)
    task = SequentialImageTask(data_dir=str(tmp_path / "mine"), val_fraction=0.0)
    assert len(task._labels["train"]) == 40  # the data dir comes first (raw files found too)
    assert task.files["train_images"] == tmp_path / "mine" / "fashion-mnist" / "train-images-idx3-ubyte"


def test_missing_idx_file_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr("rnnbench.tasks.data.SYSTEM_DATASETS", tmp_path / "system")
    with pytest.raises(DataError) as err:
        SequentialImageTask(data_dir=str(tmp_path / "d"), dataset="mnist")
    message = str(err.value)
    assert str(tmp_path / "d" / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "system" / "mnist" / "train-images-idx3-ubyte") in message
    assert "python -m rnnbench.tasks.data fetch mnist" in message


def test_image_metrics_baseline_and_resume(image_root):
    root, _ = image_root
    task = SequentialImageTask(data_dir=str(root), val_fraction=0.0, batch_size=7, seed=4)
    assert task.memoryless_baseline == pytest.approx(math.log(10))  # 6 of each digit
    oracle = lambda b, s: (torch.nn.functional.one_hot(b.targets, 10).float() * 30, s)  # noqa: E731
    metrics = task.evaluate(oracle, "test")
    assert metrics["accuracy"] == 1.0 and metrics["loss"] < 1e-6 and metrics["examples"] == 20
    always_bag = lambda b, s: (torch.nn.functional.one_hot(torch.full_like(b.targets, 8), 10).float(), s)  # noqa: E731
    per_class = task.evaluate(always_bag, "test")
    assert per_class["acc_class/bag"] == 1.0 and per_class["acc_class/trouser"] == 0.0
    with pytest.raises(DataError, match="val split"):
        task.evaluate(oracle, "val")  # val_fraction=0: there is none

    for _ in range(11):  # into the second epoch (9 batches an epoch)
        task.train_batch()
    saved = task.state_dict()
    expected = [task.train_batch() for _ in range(9)]
    resumed = SequentialImageTask(data_dir=str(root), val_fraction=0.0, batch_size=7, seed=4)
    resumed.load_state_dict(saved)
    for want in expected:
        assert torch.equal(resumed.train_batch().inputs, want.inputs)


def test_real_fashion_mnist_if_installed(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("apt-get install dataset-fashion-mnist")
    task = SequentialImageTask(data_dir=str(tmp_path), mode="row", max_train=100, max_eval=50)
    info = task.describe()
    assert info["files"]["test_labels"].startswith("/usr/share/datasets/fashion-mnist/")
    assert info["examples_val"] == 50 and info["class_names"][9] == "ankle_boot"
    batch = task.train_batch()
    assert batch.inputs.shape == (28, 64, 28) and batch.targets.max() < 10


# ---- text -----------------------------------------------------------------------------------------

ROWS = [("Great film, loved it", "pos"), ("Terrible plot", "neg"), ("great acting great film", "pos"),
        ('He said "meh"', "neg"), ("a b c d e f g", "pos")]


def write_table(path: Path, rows, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows), encoding="utf-8")
    elif fmt == "tsv":
        path.write_text("label\ttext\n" + "".join(f"{y}\t{t}\n" for t, y in rows), encoding="utf-8")
    else:
        quote = lambda s: '"' + s.replace('"', '""') + '"'  # noqa: E731
        path.write_text("text,label\n" + "".join(f"{quote(t)},{y}\n" for t, y in rows), encoding="utf-8")
    return path


def text_folder(folder: Path, fmt: str = "csv", train=ROWS, valid=ROWS[:2], test=ROWS[2:]) -> Path:
    write_table(folder / f"train.{fmt}", train, fmt)
    if valid is not None:
        write_table(folder / f"valid.{fmt}", valid, fmt)
    write_table(folder / f"test.{fmt}", test, fmt)
    return folder


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_csv_tsv_jsonl_read_the_same(tmp_path, fmt):
    task = TextClassificationTask(dataset=str(text_folder(tmp_path, fmt)), batch_size=2)
    assert task.class_names == ["neg", "pos"]
    assert task._labels["train"].tolist() == [1, 0, 1, 0, 1]
    assert task.vocab[:3] == ["<pad>", "<unk>", "great"]  # most frequent first (lowercased)
    words = ['he', 'said', '"meh"']
    assert task._ids["train"][3].tolist() == [task.token_index[w] for w in words]
    assert task.spec.output_size == 2 and task.spec.input_size == len(task.vocab)
    assert task.spec.input_kind == "tokens" and task.spec.output_kind == "sequence"


def test_explicit_files_positional_columns_and_integer_labels(tmp_path):
    (tmp_path / "tr.csv").write_text("10,good\n2,bad\n10,fine\n", encoding="utf-8")
    (tmp_path / "te.csv").write_text("2,awful\n", encoding="utf-8")
    task = TextClassificationTask(dataset=None, train_file=str(tmp_path / "tr.csv"),
                                  test_file=str(tmp_path / "te.csv"), text_column=1, label_column=0,
                                  val_fraction=0.0)
    assert task.class_names == ["2", "10"]  # integer labels in numeric order
    metrics = task.evaluate(lambda b, s: (torch.tensor([[1.0, 0.0]]).expand(len(b.targets), 2), s), "test")
    assert metrics["acc_class/2"] == 1.0 and "acc_class/10" not in metrics


def test_aclimdb_layout(tmp_path, monkeypatch):
    for split in ("train", "test"):
        for label, texts in (("pos", ["Loved it", "Superb"]), ("neg", ["Awful", "Boring film"])):
            folder = tmp_path / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i, text in enumerate(texts):
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
    monkeypatch.setenv("RNNBENCH_DATA", str(tmp_path))
    task = TextClassificationTask(dataset="imdb", val_fraction=0.25)
    assert task.class_names == ["neg", "pos"]
    assert task.describe()["examples_test"] == 4 and task.describe()["examples_val"] == 1
    assert sorted(task._labels["train"].tolist() + task._labels["val"].tolist()) == [0, 0, 1, 1]


def test_unknown_label_lists_allowed_labels(tmp_path):
    folder = text_folder(tmp_path, test=[("so so", "neutral")])
    with pytest.raises(DataError) as err:
        TextClassificationTask(dataset=str(folder))
    assert "test.csv:2" in str(err.value) and "'neutral'" in str(err.value)
    assert "['neg', 'pos']" in str(err.value)


def test_non_utf8_text_names_the_file(tmp_path):
    folder = text_folder(tmp_path)
    (folder / "valid.csv").write_bytes(b"text,label\ncaf\xe9,pos\n")
    with pytest.raises(DataError) as err:
        TextClassificationTask(dataset=str(folder))
    assert str(folder / "valid.csv") in str(err.value) and "byte offset 14" in str(err.value)


def test_empty_file_and_empty_texts(tmp_path):
    folder = text_folder(tmp_path)
    (folder / "test.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="test.csv: file is empty"):
        TextClassificationTask(dataset=str(folder))
    folder = text_folder(tmp_path / "b", train=ROWS + [("   ", "pos")])
    with pytest.raises(DataError, match=r"train\.csv:7: empty text"):
        TextClassificationTask(dataset=str(folder))
    task = TextClassificationTask(dataset=str(folder), empty_text="skip")
    assert task.describe()["skipped_empty_train"] == 1 and task.describe()["examples_train"] == 5


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        TextClassificationTask(data_dir=str(tmp_path), dataset="aclImdb")
    assert str(tmp_path / "aclImdb") in str(err.value)
    assert "python -m rnnbench.tasks.data fetch aclImdb" in str(err.value)


def test_padding_lengths_truncation_and_vocabulary_limits(tmp_path):
    rows = [("x y z w v", "a"), ("x y", "b"), ("x", "a"), ("y x q", "b")]
    folder = text_folder(tmp_path, train=rows, valid=rows, test=rows)
    task = TextClassificationTask(dataset=str(folder), max_len=4, min_freq=2, batch_size=4)
    assert task.vocab == ["<pad>", "<unk>", "x", "y"]  # z, w, v, q seen once
    batch = task._batch("train", torch.arange(4))
    assert batch.lengths.tolist() == [4, 2, 1, 3] and batch.lengths.dtype == torch.int64
    assert batch.inputs.shape == (4, 4)
    for b, n in enumerate(batch.lengths.tolist()):
        assert (batch.inputs[n:, b] == 0).all() and (batch.inputs[:n, b] != 0).all()
    assert batch.inputs[:, 0].tolist() == [2, 3, 1, 1]  # "x y z w" (v cut by max_len)
    assert task.describe()["unk_rate_test"] == pytest.approx(3 / 10)
    small = TextClassificationTask(dataset=str(folder), max_vocab=3, level="char", lowercase=False)
    assert small.vocab == ["<pad>", "<unk>", " "]


def test_bucketing_sees_every_example_once_per_epoch(tmp_path):
    g = np.random.default_rng(0)
    rows = [(" ".join(["w"] * int(g.integers(1, 40))), str(i % 3)) for i in range(103)]
    folder = text_folder(tmp_path, train=rows, valid=None, test=rows[:5])
    task = TextClassificationTask(dataset=str(folder), val_fraction=0.0, batch_size=4, bucket=True,
                                  bucket_chunk=5, seed=1)
    for epoch in range(2):
        seen = []
        for _ in range(task.batches_per_epoch):
            batch = task.train_batch()
            seen.append(batch.lengths)
        assert task.epoch == epoch + 1
        lengths = torch.cat(seen)
        assert sorted(lengths.tolist()) == sorted(task._lengths["train"].tolist())
        # Within a bucket, batches hold similar lengths: far less padding than random batches.
        padding = sum(int(b.max() * len(b) - b.sum()) for b in seen)
        assert padding < 0.25 * int(lengths.sum())
    order = TextClassificationTask(dataset=str(folder), val_fraction=0.0, batch_size=4, seed=1)._order
    indices = torch.cat([order.next() for _ in range(order.batches_per_epoch)])
    assert sorted(indices.tolist()) == list(range(103)) and order.epoch == 1


def test_text_resume_reproduces_next_batches(tmp_path):
    rows = [(" ".join(["w"] * (i % 11 + 1)), str(i % 2)) for i in range(50)]
    folder = text_folder(tmp_path, train=rows, valid=rows[:4], test=rows[:4])
    make = lambda seed=2: TextClassificationTask(dataset=str(folder), batch_size=6, bucket=True,  # noqa: E731
                                                 bucket_chunk=2, seed=seed)
    task = make()
    for _ in range(5):
        task.train_batch()
    saved = task.state_dict()
    expected = [task.train_batch() for _ in range(12)]  # crosses into the next epoch
    resumed = make()
    resumed.load_state_dict(saved)
    for want in expected:
        got = resumed.train_batch()
        assert torch.equal(got.inputs, want.inputs) and torch.equal(got.lengths, want.lengths)
        assert torch.equal(got.targets, want.targets)
    other = make(seed=3)
    assert not all(torch.equal(other.train_batch().targets, make().train_batch().targets) for _ in range(3))


def test_text_baseline_and_majority_accuracy(tmp_path):
    rows = [("good", "pos")] * 3 + [("bad", "neg")]
    folder = text_folder(tmp_path, train=rows, valid=rows, test=[("good", "pos"), ("bad", "neg")])
    task = TextClassificationTask(dataset=str(folder))
    assert task.memoryless_baseline == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    info = task.describe()
    assert info["majority_class"] == "pos" and info["majority_accuracy_test"] == 0.5
    priors = torch.log(torch.tensor([0.25, 0.75]))
    metrics = task.evaluate(lambda b, s: (priors.expand(len(b.targets), 2), s), "val")
    assert metrics["loss"] == pytest.approx(task.memoryless_baseline, rel=1e-6)
    assert metrics["accuracy"] == 0.75 and metrics["acc_class/neg"] == 0.0
    assert task.main_metric == "accuracy" and task.main_metric_mode == "max"
    counts = Counter(task._labels["val"].tolist())
    assert metrics["examples"] == sum(counts.values())


def test_without_a_test_file_a_test_split_is_held_out_of_train_after_the_validation_split(tmp_path):
    rows = [(f"text number {i}", "pos" if i % 2 else "neg") for i in range(40)]
    train = write_table(tmp_path / "train.csv", rows, "csv")
    test = write_table(tmp_path / "test.csv", rows[:4], "csv")
    held = TextClassificationTask(dataset=None, train_file=str(train), val_fraction=0.25, test_fraction=0.1,
                                  split_seed=3)
    with_test = TextClassificationTask(dataset=None, train_file=str(train), test_file=str(test),
                                       val_fraction=0.25, split_seed=3)
    assert {s: len(held._labels[s]) for s in ("train", "val", "test")} == {"train": 26, "val": 10, "test": 4}
    # the validation split is the same whether or not a test file is given (held out first)
    assert [x.tolist() for x in held._ids["val"]] == [x.tolist() for x in with_test._ids["val"]]
    assert held.describe()["held_out_of_train"] == {"val": 0.25, "test": 0.1}
    assert with_test.describe()["held_out_of_train"] == {"val": 0.25}
    with pytest.raises(ValueError, match=r"val_fraction \+ test_fraction = 1.0 leaves no training examples"):
        TextClassificationTask(dataset=None, train_file=str(train), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"test_fraction=1.5 is not allowed: must be in \[0, 1\)"):
        TextClassificationTask(dataset=None, train_file=str(train), test_fraction=1.5)
