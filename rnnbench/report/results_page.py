"""docs/results.md's tables, re-rendered from the committed records (a test checks they are)."""

from __future__ import annotations

from pathlib import Path

from rnnbench.records import run_folder
from rnnbench.report import claim_tables


def render_tables(path: Path) -> list[str]:
    """Rewrite each ``<!-- study:NAME -->`` … ``<!-- /study:NAME -->`` block of `path` with
    `table(NAME)`, so the page's tables are the committed records' (a test checks docs/results.md's are)."""
    import re

    text = path.read_text(encoding="utf-8")
    done: list[str] = []

    def render(match: re.Match) -> str:
        done.append(match.group(1))
        return f"<!-- study:{match.group(1)} -->\n{claim_tables.table(match.group(1))}<!-- /study:{match.group(1)} -->"

    new = re.sub(r"<!-- study:(\w+) -->\n.*?<!-- /study:\1 -->", render, text, flags=re.S)
    if new != text:
        run_folder.atomic_write_text(path, new)
    return done
