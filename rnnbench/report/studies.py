"""Studies: the literature's comparisons rerun with rnnbench, their committed records, and the
published values set beside them (docs/results.md; docs/results/<study>/). The command:

    python -m rnnbench.report.studies export adding outputs/sweeps/DATE/TIME  # sweep folder(s) -> runs.jsonl
    python -m rnnbench.report.studies export adding --add NEW_SWEEP          # ... beside the committed ones
    python -m rnnbench.report.studies table adding [--format latex]          # published beside measured
    python -m rnnbench.report.studies figure adding                          # docs/results/adding/adding.png
    python -m rnnbench.report.studies render                                 # docs/results.md's tables from the records
    python -m rnnbench.report.studies wikitext2-sample DIR --source SAMPLE   # the folder of study 5

Each concern is a module of its own: a study's folder, its records exported from sweep folders and its
published claims read (`study_records`); the claims judged (`verdicts`) and tabled (`claim_tables`); its
figure (`study_figures`); the tables of docs/results.md (`results_page`); study 5's data (`wikitext`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from rnnbench.errors import UserError, fail
from rnnbench.records import run_folder
from rnnbench.report import claim_tables, results_page, study_figures, study_records, wikitext


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnbench.report.studies", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="sweep folders -> docs/results/STUDY/runs.jsonl")
    p.add_argument("study")
    p.add_argument("sweeps", nargs="+")
    p.add_argument("--out", type=Path, help="folder to write (default docs/results/STUDY)")
    p.add_argument("--detail", action="store_true",
                   help="keep each run's gradient profile at initialisation and its training curve")
    p.add_argument("--add", action="store_true",
                   help="keep the records of other sweeps already in runs.jsonl (a sweep given again "
                        "replaces its own)")
    p = sub.add_parser("table", help="published values beside the committed records")
    p.add_argument("study")
    p.add_argument("--format", choices=("md", "latex"), default="md")
    p.add_argument("--records", help="a runs.jsonl or sweep records other than the committed ones")
    p = sub.add_parser("figure", help="the study's figure from its records")
    p.add_argument("study")
    p = sub.add_parser("render", help="re-render every <!-- study:NAME --> table of a Markdown page")
    p.add_argument("file", type=Path, nargs="?", default=study_records.RESULTS_DIR.parent / "results.md")
    p = sub.add_parser("wikitext2-sample", help="study 5's folder from the WikiText-2 sample")
    p.add_argument("out", type=Path)
    p.add_argument("--source", type=Path, required=True,
                   help="the WikiText-2 sample folder (valid.txt and test.txt of WikiText-2)")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            print(study_records.export(args.study, args.sweeps, args.out, args.detail, args.add))
        elif args.command == "table":
            sys.stdout.write(claim_tables.table(args.study, args.format, args.records))
            if args.format == "md":
                sys.stdout.write("\n" + claim_tables.sources_text(args.study))
                line = claim_tables.importance(args.study, args.records)
                if line:
                    sys.stdout.write("\n" + line + "\n")
        elif args.command == "figure":
            print(study_figures.figure(args.study))
            screen = study_records.folder(args.study) / "screen" / "fair.json"  # a fair comparison's screen
            if screen.is_file():
                state = run_folder.loads(screen.read_text(encoding="utf-8"))
                print(*study_figures.screen_figure(state, screen.parent / "screen"))
        elif args.command == "render":
            print(", ".join(results_page.render_tables(args.file)) or "no study tables found")
        else:
            print(wikitext.wikitext2_sample(args.source, args.out))
    except UserError as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
