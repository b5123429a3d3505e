"""Reading an offline W&B run back (history, config, summary, identity): what the tests compare with
the run folder. Built on the record decoder of rnnbench/records/wandb_offline.py; no server needed."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from rnnbench.records.wandb_offline import iter_payloads


def iter_records(path: str | os.PathLike) -> Iterator[Any]:
    """The ``wandb_internal_pb2.Record`` messages of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2

    for payload in iter_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The history rows, one dict per W&B step, as logged.

    Keys are those given to ``log`` (``"train/loss"`` stays one key; a nested dict comes back nested)
    plus W&B's own ``_step``, ``_runtime`` and ``_timestamp``. Values are JSON-decoded: NaN and
    infinities come back as floats, media (tables, charts) as W&B's reference dicts.
    """
    rows = []
    for record in iter_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, Any] = {}
        for item in record.history.item:
            _set(row, _item_path(item), _history_value(item))
        if "_step" not in row and record.history.HasField("step"):
            row["_step"] = record.history.step.num
        rows.append(row)
    return rows


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The run config: that given to ``init`` plus later updates (W&B's ``_wandb`` entry left out)."""
    return _read_updates(path, "config")


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """The run summary as W&B builds it: last logged values, then explicit summary updates
    (W&B's ``_wandb`` entry left out)."""
    return _read_updates(path, "summary")


def _read_updates(path: str | os.PathLike, section: str) -> dict[str, Any]:
    """`section` ("config" or "summary") of the run record, then every later record of that kind."""
    values: dict[str, Any] = {}
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _apply(values, getattr(record.run, section))
        elif kind == section:
            _apply(values, getattr(record, section))
    values.pop("_wandb", None)
    return values


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of the run: id, project, name, group, job type, tags, and its exit code (None if
    the run never finished)."""
    info: dict[str, Any] = {"exit_code": None}
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info.update(
                id=run.run_id, project=run.project, name=run.display_name, group=run.run_group,
                job_type=run.job_type, tags=list(run.tags),
            )
        elif kind == "exit":
            info["exit_code"] = record.exit.exit_code
    return info


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) or [item.key]


def _history_value(item: Any) -> Any:
    # wandb 0.22-0.31 write value_json; the typed oneof is read too in case a version uses it.
    typed = item.WhichOneof("value")
    if typed is None:
        return json.loads(item.value_json)
    if typed == "none":
        return None
    if typed == "json":
        return json.loads(item.json)
    return getattr(item, typed)


def _apply(target: dict[str, Any], record: Any) -> None:
    """Apply the update/remove items of a ConfigRecord or SummaryRecord to `target`."""
    for item in record.update:
        _set(target, _item_path(item), json.loads(item.value_json))
    for item in record.remove:
        keys = _item_path(item)
        node = target
        for key in keys[:-1]:
            node = node.get(key, {})
        if isinstance(node, dict):
            node.pop(keys[-1], None)


def _set(target: dict[str, Any], keys: list[str], value: Any) -> None:
    node = target
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value
