"""Analysis of finished runs and sweeps: tables, statistics and figures.

Imports go one way: ``stats`` (numbers only) <- ``runs`` / ``summary`` / ``comparisons`` (a sweep's
runs and settings) <- ``tables`` / ``latex`` / ``figures`` / ``vs_figures`` (output) <- ``report``
(the command). ``per_class``, ``landscape`` and ``activations_plot`` are commands of their own.
Each command is also installed as ``imgcls-report``, ``imgcls-per-class``, ``imgcls-landscape``,
``imgcls-activations`` (pyproject.toml, ``[project.scripts]``). The figures of a single run are
src/run_figures.py, below this package: training code draws them without importing it.
Nothing is imported here, so ``import src.analysis.stats`` pulls in no plotting.
"""
