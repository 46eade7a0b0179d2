"""Per-class test accuracy and the confusion matrix, for one run or per setting of a sweep (mean
over seeds): which classes an activation or an optimizer helps or hurts.

    python -m src.analysis.per_class outputs/runs/2026-11-23/10-00-00
    python -m src.analysis.per_class outputs/multirun/act --by activation --reference activation=relu

Reads each completed run's ``test_confusion.csv`` (rows = true class, columns = predicted class,
counts; written at test time) and writes into the directory (or ``--out``):

- ``per_class.csv``: per class and setting, the accuracy (recall: correct / images of that class)
  mean, std (over seeds, ddof=1) and n, and ``delta`` = mean − the reference setting's mean;
- ``per_class.md``: the same as a table, in %, the best setting(s) per class in bold;
- ``per_class_confusion.csv``: per setting, the confusion matrix normalised by row (each run's
  rows sum to 1; mean over seeds, so its diagonal is the mean per-class accuracy);
- ``per_class.png``: per-class accuracy bars per setting (± std) above the mean confusion matrices;
  for a single run the figure also goes into the run's TensorBoard events (``test/per_class``).

Settings are grouped as in ``python -m src.analysis.report`` (every swept key but the seed, or ``--by``).
``--reference k=v[,k2=v2]`` compares each setting with the one that has these values and the same
values of the other keys (default: the first setting). Installed as ``imgcls-per-class``
(``imgcls-per-class <sweep_dir> --by activation``).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.analysis.summary import Summary, label, reference_map, summarize
from src.run_figures import CONFUSION_CSV as CONFUSION_FILE  # the name the runs write it under


@dataclass
class PerClass:
    summary: Summary
    classes: list[str]
    table: pd.DataFrame                 # long: class, <keys>, setting, mean, std, n, delta
    confusion: dict[str, pd.DataFrame]  # setting -> mean row-normalised matrix (true x predicted)
    reference: dict[str, str]           # setting -> its reference setting


def read_confusion(path: Path) -> pd.DataFrame:
    m = pd.read_csv(path, index_col=0)
    m.index, m.columns = m.index.astype(str), m.columns.astype(str)
    if list(m.index) != list(m.columns):
        raise ValueError(f"{path}: rows and columns name different classes")
    return m.astype(float)


def per_class(run_or_sweep: Path, by: list[str] | None = None, reference: str | None = None) -> PerClass:
    s = summarize(Path(run_or_sweep), by=by)
    accs, mats = {}, {}
    for _, run in s.runs[s.runs["status"] == "completed"].iterrows():
        path = Path(run["path"]) / CONFUSION_FILE
        if not path.is_file():
            continue
        m = read_confusion(path)
        rates = m.div(m.sum(axis=1).replace(0, np.nan), axis=0)
        accs.setdefault(run["setting"], []).append(pd.Series(np.diag(rates), index=m.index))
        mats.setdefault(run["setting"], []).append(rates)
    if not accs:
        raise FileNotFoundError(f"no completed run below {s.sweep_dir} has a {CONFUSION_FILE} (written when a "
                                "run is tested)")
    classes = list(dict.fromkeys(c for runs in accs.values() for a in runs for c in a.index))
    refs = reference_map(s, reference)
    stats = {}
    for setting in s.table["setting"]:
        runs = accs.get(setting)
        if not runs:
            continue
        frame = pd.concat(runs, axis=1).reindex(classes)
        stats[setting] = pd.DataFrame({"mean": frame.mean(axis=1), "std": frame.std(axis=1, ddof=1),
                                       "n": frame.notna().sum(axis=1)})
    rows = []
    for setting, st in stats.items():
        ref = stats.get(refs.get(setting))
        keys = s.table.loc[s.table["setting"] == setting, s.keys].iloc[0].to_dict()
        for c in classes:
            delta = st.at[c, "mean"] - ref.at[c, "mean"] if ref is not None else np.nan
            rows.append({"class": c, **keys, "setting": setting, "mean": st.at[c, "mean"], "std": st.at[c, "std"],
                         "n": int(st.at[c, "n"]), "reference": refs.get(setting), "delta": delta})
    table = pd.DataFrame(rows)
    table["class"] = pd.Categorical(table["class"], categories=classes, ordered=True)
    table = table.sort_values("class", kind="stable").reset_index(drop=True)
    table["class"] = table["class"].astype(str)
    confusion = {k: sum(v) / len(v) for k, v in mats.items()}
    confusion = {k: confusion[k].reindex(index=classes, columns=classes) for k in stats}
    return PerClass(s, classes, table, confusion, {k: refs.get(k) for k in stats})


# ---------------------------------------------------------------------------------- outputs
def markdown(pc: PerClass) -> str:
    s, t = pc.summary, pc.table
    settings = list(dict.fromkeys(t["setting"]))
    name = {x: label(s, x) for x in settings}
    header = ["class", *(f"{name[x]} (%)" for x in settings)]
    deltas = [x for x in settings if pc.reference.get(x) not in (None, x)]
    header += [f"Δ {name[x]} vs {name[pc.reference[x]]} (pp)" for x in deltas]
    lines = [f"# Per-class test accuracy: {s.name}", "",
             "Accuracy per true class (correct / images of the class) in %, mean ± std over seeds; "
             "best setting per class in bold; Δ in percentage points.", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for c in [*pc.classes, None]:
        rows = t[t["class"] == c] if c is not None else \
            t.groupby("setting", sort=False)[["mean", "delta"]].mean().reset_index().assign(std=np.nan)
        rows = rows.set_index("setting")
        top = rows["mean"].max()
        best = set(rows.index[np.isclose(rows["mean"], top)]) if rows["mean"].nunique() > 1 else set()
        cells = []
        for x in settings:
            m, sd = rows.at[x, "mean"], rows.at[x, "std"]
            cell = "–" if pd.isna(m) else f"{m * 100:.2f}" + ("" if pd.isna(sd) else f" ± {sd * 100:.2f}")
            cells.append(f"**{cell}**" if x in best else cell)
        cells += ["–" if pd.isna(rows.at[x, "delta"]) else f"{rows.at[x, 'delta'] * 100:+.2f}" for x in deltas]
        lines.append(f"| {c if c is not None else '*mean over classes*'} | " + " | ".join(cells) + " |")
    n = t.groupby("setting", sort=False)["n"].max()
    lines += ["", "Runs per setting: " + ", ".join(f"{name[x]}: {n[x]}" for x in settings)]
    return "\n".join(lines) + "\n"


def figure(pc: PerClass):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, t, k = pc.summary, pc.table, len(pc.classes)
    settings = list(pc.confusion)
    ncols = min(len(settings), 4)
    nrows = -(-len(settings) // ncols)
    side = max(3.2, min(6.0, 0.35 * k + 1.5))
    fig = plt.figure(figsize=(max(8.0, side * ncols, 0.25 * k * len(settings) + 2), 4 + side * nrows),
                     layout="constrained")
    grid = fig.add_gridspec(1 + nrows, ncols, height_ratios=[4] + [side] * nrows)
    ax = fig.add_subplot(grid[0, :])
    width = 0.8 / len(settings)
    for i, x in enumerate(settings):
        g = t[t["setting"] == x]
        ax.bar(np.arange(k) + (i - (len(settings) - 1) / 2) * width, g["mean"] * 100, width,
               yerr=g["std"].fillna(0) * 100, capsize=2, label=f"{label(s, x)} (n={g['n'].max()})")
    ax.set_xticks(np.arange(k), pc.classes, rotation=45 if k > 10 or max(map(len, pc.classes)) > 6 else 0,
                  ha="right" if k > 10 or max(map(len, pc.classes)) > 6 else "center")
    lo = float(np.nanmin((t["mean"] - t["std"].fillna(0)).to_numpy())) * 100
    ax.set_ylim(max(0.0, lo - max(2.0, (100 - lo) * 0.3)), 100)
    ax.set_ylabel("test accuracy per class (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=min(len(settings), 3), frameon=False)
    fig.suptitle(f"{s.name}: test accuracy per class (mean ± std over seeds) and confusion matrices "
                 "(rows normalised, mean over seeds)", fontsize=10)
    for i, x in enumerate(settings):
        cm = fig.add_subplot(grid[1 + i // ncols, i % ncols])
        im = cm.imshow(pc.confusion[x].to_numpy(), vmin=0, vmax=1, cmap="Blues")
        if k <= 12:
            for (r, c), v in np.ndenumerate(pc.confusion[x].to_numpy()):
                if v >= 0.005:
                    cm.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if v > 0.5 else "black")
        ticks = np.arange(k) if k <= 20 else []
        cm.set_xticks(ticks, [pc.classes[j] for j in ticks], rotation=90, fontsize=7)
        cm.set_yticks(ticks, [pc.classes[j] for j in ticks], fontsize=7)
        cm.set_xlabel("predicted")
        cm.set_ylabel("true")
        cm.set_title(label(s, x).replace(",", "\n"), fontsize=8)
    fig.colorbar(im, ax=fig.axes[1:], shrink=0.8)
    return fig


def write(pc: PerClass, out: Path) -> list[str]:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    pc.table.to_csv(out / "per_class.csv", index=False)
    (out / "per_class.md").write_text(markdown(pc))
    long = [m.rename_axis(index="true", columns="predicted").stack().rename("rate").reset_index().assign(setting=x)
            for x, m in pc.confusion.items()]
    pd.concat(long)[["setting", "true", "predicted", "rate"]].to_csv(out / "per_class_confusion.csv", index=False)
    fig = figure(pc)
    fig.savefig(out / "per_class.png", dpi=110)
    files = ["per_class.csv", "per_class.md", "per_class_confusion.csv", "per_class.png"]
    runs = pc.summary.runs
    if len(runs) == 1 and runs["run"].iloc[0] == ".":  # a single run: its TensorBoard gets the figure
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(pc.summary.sweep_dir)) as tb:
            tb.add_figure("test/per_class", fig, global_step=int(runs["epochs"].fillna(0).iloc[0]))
        files.append("TensorBoard: test/per_class")
    plt.close(fig)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.analysis.per_class", description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path, help="a run directory or a multirun (sweep) directory")
    p.add_argument("--by", nargs="+", metavar="KEY", help="group by these keys (default: every swept key but the seed)")
    p.add_argument("--reference", metavar="KEY=VALUE", help="compare with this setting, e.g. activation=relu "
                   "(default: the first setting)")
    p.add_argument("--out", type=Path, help="write the files here instead of PATH")
    a = p.parse_args(argv)
    if not a.path.is_dir():
        print(f"error: {a.path} is not a directory", file=sys.stderr)
        return 2
    try:
        pc = per_class(a.path, a.by, a.reference)
        files = write(pc, a.out or a.path)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out or a.path}/{', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
