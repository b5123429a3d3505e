"""Study 5's data folder, made from the WikiText-2 sample."""

from __future__ import annotations

from pathlib import Path


def wikitext2_sample(source: Path, out: Path) -> Path:
    """train = valid.txt; valid = test = test.txt with every word not in train mapped to <unk>.

    pytorch/examples word_language_model builds its vocabulary from all three files, rnnbench from
    train only: with this folder both see the same vocabulary (the words of valid.txt, <eos>, <unk>).
    """
    out.mkdir(parents=True, exist_ok=True)
    train = (source / "valid.txt").read_text(encoding="utf-8")
    vocabulary = set(train.split()) | {"<unk>"}
    lines = (source / "test.txt").read_text(encoding="utf-8").split("\n")
    mapped = "\n".join(" ".join(w if w in vocabulary or not w else "<unk>" for w in line.split(" ")) if line.strip() else line
                       for line in lines)
    (out / "train.txt").write_text(train, encoding="utf-8")
    for name in ("valid.txt", "test.txt"):
        (out / name).write_text(mapped, encoding="utf-8")
    return out
