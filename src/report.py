"""Old entry point of the sweep report, kept as an alias: ``python -m src.report`` runs
``python -m src.analysis.report`` (see :mod:`src.analysis.report`); ``src.sweep_callbacks`` imports
:func:`write_report` from here."""
import sys

from src.analysis.report import main, write_report  # noqa: F401
from src.analysis.runs import load_runs, setting_of  # noqa: F401
from src.analysis.summary import Summary, epoch_curves, summarize  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
