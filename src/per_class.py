"""Old entry point, kept as an alias: ``python -m src.per_class`` runs ``python -m src.analysis.per_class``."""
import sys

from src.analysis.per_class import PerClass, figure, main, markdown, per_class, read_confusion, write  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
