"""From a sweep directory to the paper's table: per setting the seeds' statistics, every setting
against a reference with a verdict, and the figures.

    python -m src.analysis.report outputs/multirun/2026-11-23/10-00-00
    python -m src.analysis.report <sweep_dir> --reference activation=relu --equivalence 0.2
    python -m src.analysis.report <sweep_dir> --metric val/acc_best --by model activation
    python -m src.analysis.report <sweep_dir> --plot-vs model.depth --train-vs-test
    python -m src.analysis.report <sweep_1> <sweep_2> --out merged/     # e.g. a later sweep that added seeds

(``imgcls-report <sweep_dir> ...`` is the same command, installed by ``pip install -e .``.) Reads
every ``metrics.json`` below the sweep directories (and notices run folders that never wrote one),
groups the runs by the overrides that differ between them (the seed, paths and run-control keys
aside; several sweeps merge by these overrides, a run of the same setting and seed counted once)
and writes into the sweep directory (or ``--out``):

- ``summary.md`` / ``summary.csv`` / ``summary.tex``: per setting n, mean, SD, the t-interval of the
  mean, median, min, max (IQM and a BCa bootstrap interval from 10 seeds on), failed / diverged /
  missing counts and the mean epoch time, rows in the sweep command's order; and against the
  reference (``--reference key=value``, default the first setting): Δ with its 95 % CI, the test
  (paired t by seed, else Welch) and its adjusted p (``--adjust holm|bh|none``), the verdict
  (better / worse / equivalent within ±``--equivalence`` / inconclusive), the exact test's p (sign
  flip or Mann-Whitney), P(A>B), wins per seed and a power estimate (seeds for the observed Δ or
  ``--target-delta``). The CSV keeps the raw unit (accuracy as a fraction), the tables show %;
  ``--equivalence`` and ``--target-delta`` are in the tables' unit (percentage points);
- ``summary_strip.png`` (every seed as a point over the mean and its CI) and
  ``summary_comparison.png`` (Δ with CI per setting, coloured by verdict);
- ``curves.png``: validation accuracy and loss per epoch, mean line and ±std band per setting;
- ``vs_<key>.png`` / ``.csv`` (``--plot-vs model.depth``, and by itself for every numeric key swept
  over at least 3 values) and ``train_vs_test.png`` / ``.csv`` (``--train-vs-test``).

The statistics are :mod:`src.analysis.stats`; per-class accuracy is :mod:`src.analysis.per_class`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.analysis.comparisons import check_options, compare
from src.analysis.summary import Summary, reference_map, summarize
from src.analysis.tables import markdown, mean_std, print_table


def write_report(sweep_dir: Path | list[Path], metric: str = "test/acc", by: list[str] | None = None,
                 out_dir: Path | None = None, plots: bool = True, console=None, show: bool = True,
                 show_problems: bool = True, plot_vs: list[str] | None = None, train_vs_test: bool = False,
                 reference: str | None = None, alpha: float = 0.05, adjust: str = "holm",
                 equivalence: float | None = None, target_delta: float | None = None,
                 ci: str = "unadjusted", reference_is_default: bool = False) -> Summary:
    """The tables and figures of one sweep, or of several merged (a list). ``plot_vs``: keys to plot
    the metric against (``vs_<key>.png/.csv``); None picks every swept numeric key with at least 3
    values, [] none. ``train_vs_test``: also ``train_vs_test.png/.csv``. ``reference`` ...
    ``target_delta``: the comparisons (see :func:`src.analysis.comparisons.compare`). Bad input
    fails before any file is written. The files written are listed in ``Summary.files``."""
    from src.analysis import figures as figs
    from src.analysis import vs_figures as vsf
    from src.analysis.latex import latex

    check_options(alpha, adjust, equivalence, target_delta, ci)
    s = summarize(sweep_dir, metric, by)
    if reference and reference_is_default:  # a preset's reference this sweep does not vary: the first setting
        try:
            reference_map(s, reference)
        except KeyError as e:
            s.warnings.append(f"{e.args[0]}: compared with the first setting instead")
            reference = None
    s = compare(s, reference, alpha, adjust, equivalence, target_delta, ci)
    out = Path(out_dir or s.sweep_dir)
    keys = plot_vs if plot_vs is not None else (vsf.auto_vs_keys(s) if plots else [])
    vs = {x: vsf.vs_table(s, x) for x in keys}  # bad keys fail here, before anything is written
    tvt = vsf.train_vs_test_table(s) if train_vs_test else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(markdown(s))
    csv = s.table.copy()
    csv.insert(csv.columns.get_loc("mean"), "mean_std", [mean_std(m, d, s.percent)
                                                         for m, d in zip(csv["mean"], csv["std"])])
    csv.to_csv(out / "summary.csv", index=False)
    (out / "summary.tex").write_text(latex(s))
    s.files += ["summary.md", "summary.csv", "summary.tex"]
    if plots:
        figs.strip_chart(s, out / "summary_strip.png")
        s.files.append("summary_strip.png")
        if figs.comparison_chart(s, out / "summary_comparison.png"):
            s.files.append("summary_comparison.png")
        figs.curves_chart(s, out / "curves.png")
        s.files.append("curves.png")
    for x, table in vs.items():
        s.files += vsf.write_vs(s, table, x, out)
    if train_vs_test:
        s.files += vsf.write_train_vs_test(s, out, tvt)
    if show:
        print_table(s, console, show_problems)
    return s


def check_reference(text: str | None) -> None:
    """The shape of --reference, checked before any file is read (its key and value need the runs)."""
    if text is not None and not all(part.partition("=")[0] and part.partition("=")[1] for part in text.split(",")):
        raise ValueError(f"--reference {text}: give key=value[,key2=value2], e.g. activation=relu")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m src.analysis.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dirs", type=Path, nargs="+", metavar="SWEEP_DIR",
                   help="a multirun directory (outputs/multirun/<date>/<time>); several are merged")
    p.add_argument("--metric", default="test/acc", help="metrics.json key to aggregate (default: test/acc)")
    p.add_argument("--by", nargs="+", metavar="KEY", help="group by these keys (default: every swept key but the seed)")
    p.add_argument("--out", type=Path, help="write the files here instead of the sweep directory (needed "
                   "when merging several)")
    p.add_argument("--no-plots", action="store_true", help="no summary/curves figures (the tables and what is "
                   "asked below still)")
    p.add_argument("--plot-vs", nargs="+", metavar="KEY", help="plot the metric against this numeric swept key, one "
                   "line per value of the other keys: vs_<KEY>.png/.csv (default: every numeric key swept over >= 3 "
                   "values)")
    p.add_argument("--train-vs-test", action="store_true", help="also train_vs_test.png/.csv: train and "
                   "validation (= test split by default) loss and accuracy per epoch per setting")
    g = p.add_argument_group("statistics")
    g.add_argument("--reference", metavar="KEY=VALUE", help="compare every setting with this one "
                   "(and the same values of the other keys), e.g. activation=relu (default: the first setting)")
    g.add_argument("--adjust", default="holm", metavar="holm|bh|none",
                   help="p-value adjustment across the table's comparisons: Holm (default), Benjamini-Hochberg or none")
    g.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdicts (default 0.05)")
    g.add_argument("--equivalence", type=float, metavar="DELTA", help="also test equivalence within ±DELTA (two "
                   "one-sided tests), in the table's unit: percentage points for accuracies")
    g.add_argument("--ci", default="unadjusted", metavar="unadjusted|adjusted",
                   help="intervals of Δ: unadjusted 95 %% (default) or adjusted like the p-values, so that each "
                   "excludes 0 exactly when its verdict is significant (the comparison figure always uses these "
                   "under an adjustment)")
    g.add_argument("--target-delta", type=float, metavar="DELTA", help="the power estimate's seeds to detect this Δ "
                   "(table's unit) instead of the observed one")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    bad = [d for d in a.sweep_dirs if not d.is_dir()]
    try:
        if bad:
            raise FileNotFoundError(f"{bad[0]} is not a directory")
        if len(a.sweep_dirs) > 1 and a.out is None:
            raise ValueError(f"{len(a.sweep_dirs)} sweeps are merged into one report: say where it goes with --out DIR")
        check_options(a.alpha, a.adjust, a.equivalence, a.target_delta, a.ci)
        check_reference(a.reference)
        dirs = a.sweep_dirs if len(a.sweep_dirs) > 1 else a.sweep_dirs[0]
        s = write_report(dirs, a.metric, a.by, a.out, plots=not a.no_plots, plot_vs=a.plot_vs,
                         train_vs_test=a.train_vs_test, reference=a.reference, alpha=a.alpha, adjust=a.adjust,
                         equivalence=a.equivalence, target_delta=a.target_delta, ci=a.ci)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out or a.sweep_dirs[0]}/{', '.join(s.files)}")
    if s.n_failed:
        print(f"{s.n_failed} run(s) did not complete (listed in summary.md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
