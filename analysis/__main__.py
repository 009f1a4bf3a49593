"""Study analyses: ``python -m analysis <study> [SWEEP_DIR] [--out DIR]``.

Studies (one per preset in conf/experiment/): bias_variance, early_stopping, scaling, pareto,
model_size, learning_rate, sgd_noise, width.
Each reads a finished sweep (run files and the sweep index; nothing is re-run) and writes figures
(PNG + PDF), CSV/Markdown tables and results.json into ``<sweep>/analysis/``. Without SWEEP_DIR,
the newest sweep of the study under runs/studies/<study>/ is used. Also
``python -m analysis.<study> ...``. The theory frontier (no sweep needed):
``python -m analysis.theory_frontier --out DIR``.
"""

from __future__ import annotations

import importlib
import sys

STUDIES = ("bias_variance", "early_stopping", "scaling", "pareto", "model_size", "learning_rate", "sgd_noise",
           "width")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    study, rest = argv[0], argv[1:]
    if study not in STUDIES:
        sys.stderr.write(f"error: study={study}: must be one of {'|'.join(STUDIES)}\n")
        return 2
    return importlib.import_module(f"analysis.{study}").main(rest)


if __name__ == "__main__":
    sys.exit(main())
