"""``python -m rnnbench.report``: see `rnnbench.report.cli`."""

import sys

from rnnbench.report.cli import main

sys.exit(main())
