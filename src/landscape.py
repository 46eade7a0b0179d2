"""Old entry point, kept as an alias: ``python -m src.landscape`` runs ``python -m src.analysis.landscape``."""
import sys

from src.analysis.landscape import (  # noqa: F401
    grid, landscape, landscape_figure, landscape_network, landscape_weights, main, write_csv,
)

if __name__ == "__main__":
    sys.exit(main())
