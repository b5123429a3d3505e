"""Small generated data sets in the real on-disk formats, so the real loaders read them in tests."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np

IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049


def write_idx(path: Path, array: np.ndarray, magic: int) -> Path:
    """An MNIST-format idx file, gzipped: magic, dimensions (big-endian int32), then uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.with_name(path.name + ".gz")
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


def separable_images(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """A Fashion-MNIST-shaped set whose class k lights up row band k: separable only by reading
    rows in order and remembering where the band was (noise everywhere else)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 2 * k + 4: 2 * k + 6, :] = 230
        write_idx(folder / f"{split}-images-idx3-ubyte", images, IDX_IMAGES_MAGIC)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, IDX_LABELS_MAGIC)
    return folder


WORDS = "the a cat dog sat ran on under mat log quickly slowly".split()


def char_corpus(path: Path, n_chars: int = 30000, seed: int = 0) -> Path:
    """Text from a tiny grammar: strongly predictable characters (unigram entropy ~4 bits, the
    grammar much less), so an LM that learns context gets far below the unigram perplexity."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        line = f"{rng.choice(['the', 'a'])} {rng.choice(['cat', 'dog'])} {rng.choice(['sat', 'ran'])} " \
               f"{rng.choice(['on', 'under'])} the {rng.choice(['mat', 'log'])} {rng.choice(['quickly', 'slowly'])}.\n"
        out.append(line)
        size += len(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out), encoding="utf-8")
    return path


def word_corpus(folder: Path, lines: tuple[int, int, int] = (400, 60, 60), seed: int = 0) -> Path:
    """A PTB/WikiText-format folder (train/valid/test.txt, whitespace tokens) from the same grammar."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in zip(("train", "valid", "test"), lines):
        text = "".join(
            f" {rng.choice(['the', 'a'])} {rng.choice(['cat', 'dog'])} {rng.choice(['sat', 'ran'])} "
            f"{rng.choice(['on', 'under'])} the {rng.choice(['mat', 'log'])} \n" for _ in range(n))
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


POSITIVE = "good great lovely superb fine".split()
NEGATIVE = "bad awful poor dreadful dull".split()
FILLER = "the film was and it plot actors story quite very".split()


def sentiment_csv(folder: Path, n: tuple[int, int, int] = (300, 60, 60), seed: int = 0) -> Path:
    """train/valid/test.csv with `text` and `label` (pos/neg); variable lengths 3-30 words, the
    sentiment word anywhere in the text."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in zip(("train", "valid", "test"), n):
        rows = ["text,label"]
        for _ in range(count):
            label = rng.choice(["pos", "neg"])
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 29))]
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
            rows.append(f"\"{' '.join(words)}\",{label}")
        (folder / f"{name}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder
