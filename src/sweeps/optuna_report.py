"""The end of a search, in the sweep dir and on the terminal: the best parameters and value, every
trial (number, parameters, value, state, duration), Optuna's optimisation-history and
parameter-importance figures (the Pareto front for several objectives) and, when confirmation
seeds ran, their mean and 95 % t-interval beside the search's best value.

    search.md  trials.csv  history.png  importance.png | pareto.png  (confirm.csv)
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def trials_table(study) -> pd.DataFrame:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("over_budget"):
            continue
        dur = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        row = {"number": t.number, **{f"params.{k}": v for k, v in t.params.items()}}
        values = t.values or [None] * len(study.directions)
        for i, v in enumerate(values):
            row["value" if len(values) == 1 else f"value_{i}"] = v
        row.update(state=t.state.name.lower(), duration_s=None if dur is None else round(dur, 1),
                   seeds=len(t.user_attrs.get("seeds", [])) or None, error=t.user_attrs.get("error"),
                   retry_of=RetryHeartbeatStaleTrialCallback.retried_trial_number(t))
        rows.append(row)
    return pd.DataFrame(rows)


def confirmation_summary(confirmation: dict | None) -> dict | None:
    if not confirmation:
        return None
    from src.analysis.stats import t_interval

    out = {"n": 0}
    for key in ("value", "test/acc"):
        vals = [r[key] for r in confirmation["runs"] if r.get(key) is not None and r["status"] == "completed"]
        if not vals:
            continue
        mean = sum(vals) / len(vals)
        lo, hi = t_interval(vals) if len(vals) > 1 else (math.nan, math.nan)
        out[key] = {"mean": mean, "lo": lo, "hi": hi, "n": len(vals)}
        out["n"] = max(out["n"], len(vals))
    out["failed"] = sum(r["status"] != "completed" for r in confirmation["runs"])
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_search_report(study, sweep_dir: Path, objectives: list[str], confirmation: dict | None, console=None) -> list[str]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    table = trials_table(study)
    table.to_csv(sweep_dir / "trials.csv", index=False)
    files = ["search.md", "trials.csv"] + _figures(study, sweep_dir, objectives)
    lines = [f"# Search: {study.study_name}", ""]
    states = table["state"].value_counts().to_dict() if len(table) else {}
    lines.append(f"{len(table)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ".")
    conf = confirmation_summary(confirmation)
    if len(study.directions) == 1:
        try:
            best = study.best_trial
        except ValueError:
            best = None
        if best is not None:
            seeds = len(best.user_attrs.get("seeds", [])) or 1
            lines += ["", f"**Best trial {best.number}**: {objectives[0]} = {best.value:.4f} "
                      f"(mean of {seeds} seed{'s' if seeds > 1 else ''}; the best of {states.get('complete', 0)} "
                      f"trials, so biased upwards)", ""]
            lines += [f"- `{k}` = {_fmt(v)}" for k, v in best.params.items()]
        if conf:
            lines.append("")
            lines.append(f"**Confirmation** (best parameters, {conf['n']} fresh seed(s), never seen by the search"
                         + (f"; {conf['failed']} failed" if conf["failed"] else "") + "):")
            for key, label in (("value", objectives[0]), ("test/acc", "test/acc")):
                if key in conf:
                    c = conf[key]
                    ci = f", 95 % CI [{c['lo']:.4f}, {c['hi']:.4f}]" if not math.isnan(c["lo"]) else " (one run: no interval)"
                    lines.append(f"- {label}: {c['mean']:.4f} (n = {c['n']}{ci})")
            pd.DataFrame(confirmation["runs"], index=confirmation["seeds"]).rename_axis("seed").to_csv(sweep_dir / "confirm.csv")
            files.append("confirm.csv")
    else:
        front = study.best_trials
        lines += ["", f"**Pareto front** ({', '.join(f'{o} ({d.name.lower()})' for o, d in zip(objectives, study.directions))}):"]
        lines += [f"- trial {t.number}: " + ", ".join(f"{o} = {v:.4g}" for o, v in zip(objectives, t.values)) + " · "
                  + " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()) for t in front]
    if "importance.png" in files:
        lines += ["", f"importance.png: {importance_caption(study, importance_evaluator()[1])}."]
    lines += ["", "## Trials", "", _markdown(table)]
    (sweep_dir / "search.md").write_text("\n".join(lines) + "\n")
    if console is not None:
        _print(console, lines[:lines.index("## Trials")], sweep_dir, files)
    return files


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no trials)"
    shown = table.drop(columns=[c for c in ("error", "retry_of") if c in table and table[c].isna().all()])
    head = "| " + " | ".join(shown.columns) + " |"
    sep = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _print(console, lines: list[str], sweep_dir: Path, files: list[str]) -> None:
    for line in lines:
        if line.strip() and not line.startswith("# "):
            console.print("[cyan]\\[search][/cyan] " + line.replace("**", ""), soft_wrap=True)
    console.print(f"[cyan]\\[search][/cyan] report in {sweep_dir}/{', '.join(files)}")


MIN_TRIALS_FOR_IMPORTANCE = 10  # below this an importance estimate moves a lot with one more trial


def importance_evaluator():
    """fANOVA (a random-forest variance decomposition) when scikit-learn is there, else PED-ANOVA
    (Optuna's default since v4.5). The two can disagree widely on few trials (0.64/0.36 against
    0.99/0.01 on one 4-trial study), so the figure and search.md name the one used."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    try:
        import sklearn  # noqa: F401
    except ImportError:
        return PedAnovaImportanceEvaluator(), "PED-ANOVA"
    return FanovaImportanceEvaluator(seed=0), "fANOVA"


def importance_caption(study, evaluator_name: str) -> str:
    complete = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
    few = f"; fewer than {MIN_TRIALS_FOR_IMPORTANCE}: a rough guide only" if complete < MIN_TRIALS_FOR_IMPORTANCE else ""
    return f"{evaluator_name}, {complete} complete trials{few}"


def _figures(study, sweep_dir: Path, objectives: list[str]) -> list[str]:
    """Optuna's own matplotlib figures; each is skipped (not fatal) when the trials cannot make it
    (e.g. importance needs two completed trials and a parameter that varies)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vm

    evaluator, evaluator_name = importance_evaluator()
    done = []
    single = len(study.directions) == 1
    jobs = {"history.png": lambda: vm.plot_optimization_history(study, target_name=objectives[0]) if single else None,
            "importance.png": lambda: vm.plot_param_importances(study, evaluator=evaluator,
                                                                 target=None if single else (lambda t: t.values[0]),
                                                                 target_name=objectives[0]),
            "pareto.png": lambda: None if single else vm.plot_pareto_front(study, target_names=objectives[:3])}
    for name, make in jobs.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = make()
            if ax is None:
                continue
            if name == "importance.png":
                ax.set_title(f"Hyperparameter importance ({importance_caption(study, evaluator_name)})", fontsize=9)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.tight_layout()
            fig.savefig(sweep_dir / name, dpi=120)
            plt.close(fig)
            done.append(name)
        except Exception:
            plt.close("all")
    return done
