"""The configuration reference (docs/configuration.md): every key of every schema with its default and,
where the class using it restricts it, its allowed values, all read from the code (the schemas, whose
defaults are the constructors', and each class's ALLOWED), so the page cannot drift from it.

    python -m rnnbench.run.reference docs/configuration.md    # rewrite the page's generated block
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.utils import get_class

from rnnbench.records import run_folder
from rnnbench.records.wandb_sink import MODES as WANDB_MODES
from rnnbench.run import config
from rnnbench.run.train import TrainSettings

BEGIN, END = "<!-- configuration-reference -->", "<!-- /configuration-reference -->"


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _show(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str) and value.startswith("${"):
        return f"`{value}`"  # an interpolation: the key it follows
    return f"`{value}`" if value != "" else "`''`"


def _table(prefix: str, schema: type, allowed: dict[str, tuple[str, ...]]) -> list[str]:
    rows = ["| key | default | allowed |", "| --- | --- | --- |"]
    for f in dataclasses.fields(schema):
        value = _default(f)
        if f.name.startswith("_") or dataclasses.is_dataclass(value):  # a sub-group has its own table
            continue
        choices = " \\| ".join(f"`{v}`" for v in allowed.get(f.name, ()))
        rows.append(f"| `{prefix}.{f.name}` | {_show(value)} | {choices} |")
    return rows


def reference() -> str:
    """The generated block of docs/configuration.md (Markdown)."""
    lines = [BEGIN, "", "Generated from the schemas and the classes (`python -m rnnbench.run.reference "
             "docs/configuration.md`); a test checks it is current.", ""]
    for group, options in config.SCHEMAS.items():
        for option, schema in options.items():
            cls = get_class(schema._target_)
            lines += [f"### `{group}={option}`: `{schema._target_}`", ""]
            lines += _table(group, schema, getattr(cls, "ALLOWED", {})) + [""]
    for title, prefix, schema, allowed in (
            ("model (`arch` sets some)", "model", config.ModelConf, get_class(config.ModelConf._target_).ALLOWED),
            ("train", "train", config.TrainConf, TrainSettings.ALLOWED),
            ("logger", "logger", config.LoggerConf, {}),
            ("logger.wandb", "logger.wandb", config.WandbConf, {"mode": WANDB_MODES}),
            ("testing (hooks of the test suite, outside the fingerprint)", "testing", config.TestingConf, {})):
        lines += [f"### {title}", ""] + _table(prefix, schema, allowed) + [""]
    return "\n".join(lines) + END


def render(path: Path) -> bool:
    """Rewrite the generated block of `path`; True if it changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + reference() + text[end:]
    if new != text:
        run_folder.atomic_write_text(path, new)
    return new != text


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m rnnbench.run.reference PAGE.md", file=sys.stderr)
        return 2
    print(f"{args[0]}: {'rewritten' if render(Path(args[0])) else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
