"""Is an offline W&B run's file complete on disk? Decoding the ``.wandb`` record log with no server.

An offline run is ``<dir>/wandb/offline-run-<date>_<time>-<id>/run-<id>.wandb`` and that file is its
only copy (no ``wandb-summary.json``, no ``config.yaml``). ``wandb.sdk.internal.datastore`` that used
to read it is gone from wandb 0.30, so this module decodes the format itself (stable across wandb
0.22-0.31), a LevelDB-style record log:

- a 7-byte file header: ``b":W&B"``, the magic 0xBEE1 (``<H``), the version 0 (``<B``);
- then 32 KiB blocks (the file header counts towards the first), each a run of records with a
  7-byte header: CRC32 (``<I``), payload length (``<H``), type (``<B``: 1 full, 2 first, 3 middle,
  4 last; 0 or a tail shorter than 7 bytes pads the block). The CRC covers the type byte then the
  payload. A full record, or first + middle... + last, assembles one payload;
- each payload is a ``wandb.proto.wandb_internal_pb2.Record``.

The run's own path needs only `wait_until_complete` (``WandbSink.finish``, which contains any error
of it: the run's records never depend on W&B's file format). Reading the history, config and summary
back is for the tests (tests/wandb_records.py).

Call ``finish()`` on the run, then `wait_until_complete`, before reading: during a run only whole
blocks are on disk, and ``finish()`` may return before the last one is (``WandbSink.finish`` waits
for it). A record
cut short at the end of the file (the process died) ends the reading quietly; a CRC mismatch is an
error (`CorruptRecordError`).
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_SIZE = 32 * 1024
RECORD_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class CorruptRecordError(ValueError):
    """A record of a .wandb file fails its CRC or breaks the first/middle/last sequence."""


def find_offline_runs(directory: str | os.PathLike) -> list[Path]:
    """The ``offline-run-<date>_<time>-<id>`` folders under `directory`, oldest first (to the second;
    runs started in the same second come in path order).

    `directory` may be a run folder (holding ``wandb/``), a ``wandb/`` folder, or anything above.
    """
    directory = Path(directory)
    if directory.name.startswith("offline-run-") and directory.is_dir():
        return [directory]
    runs = [p for p in directory.rglob("offline-run-*") if p.is_dir()]
    return sorted(runs, key=lambda p: (p.name.rsplit("-", 1)[0], str(p)))


def wandb_file(path: str | os.PathLike) -> Path:
    """The ``run-<id>.wandb`` file for `path`: the file itself, its offline-run folder, or a folder
    holding exactly one offline run."""
    path = Path(path)
    if path.is_file():
        return path
    files = sorted(path.glob("run-*.wandb"))
    if not files:
        runs = find_offline_runs(path)
        if len(runs) != 1:
            found = ", ".join(p.name for p in runs) or "none"
            raise FileNotFoundError(f"expected one offline W&B run under {path}, found: {found}")
        files = sorted(runs[0].glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb file in {path}, found {len(files)}")
    return files[0]


def iter_payloads(path: str | os.PathLike) -> Iterator[bytes]:
    """The assembled record payloads of a .wandb file, each CRC-checked."""
    data = wandb_file(path).read_bytes()
    if data[: len(FILE_HEADER)] != FILE_HEADER:
        raise CorruptRecordError(f"{path}: not a W&B record log (header {data[:7]!r})")
    pos = len(FILE_HEADER)
    pending: bytearray | None = None  # payload pieces of a record split across blocks
    while pos < len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:  # block tail too short for a header: padding
            pos += left_in_block
            continue
        if pos + RECORD_HEADER.size > len(data):
            return  # header cut short
        crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding to the end of the block
            pos += left_in_block
            continue
        start = pos + RECORD_HEADER.size
        payload = data[start : start + length]
        if len(payload) < length:
            return  # payload cut short
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise CorruptRecordError(f"{path}: CRC mismatch in the record at byte {pos}")
        pos = start + length
        if kind == FULL:
            if pending is not None:
                raise CorruptRecordError(f"{path}: full record at byte {pos} inside a split record")
            yield payload
        elif kind == FIRST:
            if pending is not None:
                raise CorruptRecordError(f"{path}: first record at byte {pos} inside a split record")
            pending = bytearray(payload)
        elif kind in (MIDDLE, LAST):
            if pending is None:
                raise CorruptRecordError(f"{path}: {'middle' if kind == MIDDLE else 'last'} record "
                                         f"at byte {pos} without a first")
            pending += payload
            if kind == LAST:
                yield bytes(pending)
                pending = None
        else:
            raise CorruptRecordError(f"{path}: unknown record type {kind} at byte {pos}")


def is_complete(path: str | os.PathLike) -> bool:
    """True once the run's exit record is on disk (the last record W&B writes)."""
    try:
        payloads = list(iter_payloads(path))
    except FileNotFoundError:
        return False
    if not payloads:
        return False
    from wandb.proto import wandb_internal_pb2

    for payload in reversed(payloads[-8:]):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "exit":
            return True
    return False


def wait_until_complete(path: str | os.PathLike, timeout: float = 10.0) -> bool:
    """Wait for the run's exit record to reach the disk; False if it has not after `timeout` s.

    Measured with wandb 0.31: ``run.finish()`` returns, in about one run out of ten, before W&B's
    service process has written the file's last block (the file may hold only its 7-byte header).
    """
    deadline = time.monotonic() + timeout
    while not is_complete(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
