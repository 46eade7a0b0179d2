"""The Optuna search loop behind ``hydra/sweeper=optuna`` (the Hydra plugin in hydra_plugins/ only
calls this): ask a trial, run its seeds as jobs, tell the mean; at most ``n_jobs`` jobs at once and
a new one the moment one ends; then rerun the best parameters with fresh seeds and write the report.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.config_schema import val_is_test_split
from src.errors import ConfigError
from src.sweeps import optuna_study as st
from src.sweeps.optuna_space import override, parse_space, split_arguments
from src.sweeps.runners import job_outcome, launcher_jobs, make_runner


@dataclass
class Trial:
    trial: Any
    jobs: list = field(default_factory=list)  # (seed, overrides), not yet started
    outcomes: list = field(default_factory=list)


def directions_of(options: DictConfig) -> list[str]:
    d = options.direction
    dirs = [str(x) for x in d] if OmegaConf.is_list(d) or isinstance(d, (list, tuple)) else [str(d)]
    for x in dirs:
        if x not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={x} is not valid: use maximize | minimize (or a list of them)")
    return dirs


def objectives_of(options: DictConfig, config: DictConfig, n: int) -> list[str]:
    objs = list(options.objectives) if options.get("objectives") else [str(config.get("optimized_metric", "objective"))]
    if len(objs) != n:
        raise ConfigError(f"hydra.sweeper.objectives has {len(objs)} metric(s) but hydra.sweeper.direction {n}: "
                          f"give one direction per objective")
    return objs


def check_counts(options: DictConfig) -> None:
    if int(options.n_trials) < 1 or int(options.seeds_per_trial) < 1 or int(options.confirm_seeds) < 0:
        raise ConfigError("hydra.sweeper: n_trials and seeds_per_trial must be >= 1, confirm_seeds >= 0")


def check_honest(objectives: list[str], config: DictConfig) -> None:
    """A search selects: it must never select on the test split."""
    for k in objectives:
        if k.startswith("test/"):
            raise ConfigError(f"the search would optimise {k}, i.e. choose hyperparameters on the test set: "
                              f"set optimized_metric=val/acc_best and data.val_size=0.1 (a hold-out of the training split)")
        if k.startswith("val/") and OmegaConf.select(config, "data") is not None and val_is_test_split(config):
            raise ConfigError(f"the search optimises {k} but data.val_size=0 validates on the test split: "
                              f"set data.val_size=0.1 (a hold-out of the training split)")


class Search:
    def __init__(self, options: DictConfig, config: DictConfig, launcher: Any):
        self.o, self.config, self.launcher = options, config, launcher
        self.space = parse_space(options.params) if options.params else {}  # + the command line's, in run()
        self.directions = directions_of(options)
        self.objectives = objectives_of(options, config, len(self.directions))
        check_honest(self.objectives, config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.url = st.storage_url(options.storage, self.sweep_dir)
        self.name = st.study_name(options, self.sweep_dir)
        self.k = int(options.seeds_per_trial)
        check_counts(options)
        self.n_jobs = int(options.n_jobs) if options.n_jobs else launcher_jobs(launcher)
        self.base_seed = int(OmegaConf.select(config, "seed", default=0) or 0)
        self.pruner_name = str(options.pruner) if len(self.directions) == 1 and self.k == 1 else "none"
        self.idx = 0

    # ------------------------------------------------------------------ the loop
    def run(self, arguments: list[str], console) -> dict:
        self.fixed, extra = split_arguments(arguments)
        self.space.update(extra)
        if not self.space:
            parse_space({})  # refuses the empty space in one line
        self.console = console
        pruner = st.make_pruner(self.pruner_name, int(self.o.pruner_startup_trials), int(self.o.pruner_warmup_epochs))
        # our own reference to the storage: heartbeats and trial look-ups (a Study's is private)
        self.storage = st.make_storage(self.url, int(self.o.heartbeat_s), int(self.o.grace_s))
        opened = st.open_study(self.storage, self.url, self.name, self.directions, None, pruner)
        # a resumed (or a second) process must not draw the first one's random points again: its
        # sampler seed moves on by the trials already in the study (a fresh study: the seed itself)
        seed = None if self.o.seed is None else int(self.o.seed) + len(opened.trials)
        sampler = st.make_sampler(str(self.o.sampler), seed, self.space, len(self.directions))
        self.study = st.open_study(self.storage, self.url, self.name, self.directions, sampler, pruner)
        stale = st.fail_stale(self.study)
        done_before = len(st.counted_trials(self.study))
        console.print(f"[cyan]\\[search][/cyan] study '{self.name}' in {self.url}: {done_before}/{self.o.n_trials} "
                      f"trials there already" + (f", {len(stale)} stale trial(s) failed and queued again" if stale else "")
                      + f"; up to {self.n_jobs} job(s) at once, {self.k} seed(s) per trial")
        if str(self.o.pruner) != "none" and self.pruner_name == "none":
            console.print("[yellow]\\[search] pruning is off: it needs one objective and seeds_per_trial=1[/yellow]")
        self.heart = st.Heartbeat(self.study, self.storage, float(self.o.heartbeat_s))
        self.heart.start()
        try:
            self._loop(console)
            confirm = self._confirm(console)
        finally:
            self.heart.stop()
        return {"study": self.study, "confirm": confirm}

    def _loop(self, console) -> None:
        runner = make_runner(self.launcher, self.n_jobs)
        open_trials: list[Trial] = []
        in_flight: dict = {}
        while True:
            while len(in_flight) < self.n_jobs:
                job = self._next_job(open_trials)
                if job is None:
                    break
                tr, seed, overrides = job
                in_flight[runner.submit(self._next_idx(), overrides)] = (tr, seed)
            if not in_flight:
                if self._others_may_come_back(console):
                    continue
                return
            for f in runner.wait(set(in_flight)):
                tr, seed = in_flight.pop(f)
                tr.outcomes.append((seed, job_outcome(f, self.objectives)))
                if len(tr.outcomes) == self.k:
                    open_trials.remove(tr)
                    self._tell(tr, console)

    def _others_may_come_back(self, console) -> bool:
        """The budget is used up, but partly by trials this process does not run: a killed
        process's (resumed too soon to see them stale) or a live one's. Wait up to the grace
        period: stale ones are failed and queued again (True: run them here); live ones finish
        with their process (False)."""
        import time

        mine = self.heart.numbers()
        others = [t for t in st.running_trials(self.study) if t.number not in mine]
        if not others:
            return False
        console.print(f"[cyan]\\[search][/cyan] {len(others)} trial(s) run elsewhere or by a killed process: "
                      f"waiting up to {self.o.grace_s} s to see whether they go stale")
        deadline = time.time() + float(self.o.grace_s) + float(self.o.heartbeat_s)
        while time.time() < deadline:
            time.sleep(min(float(self.o.heartbeat_s), 5.0))
            if self._fail_stale() or st.waiting_trials(self.study):
                return True
            if not st.running_trials(self.study):
                return False
        return False

    def _fail_stale(self) -> list[int]:
        stale = st.fail_stale(self.study)
        if stale:
            self.console.print(f"[cyan]\\[search][/cyan] trial(s) {', '.join(map(str, stale))} went stale (their process "
                               f"died): failed, and queued again with the same parameters")
        return stale

    def _next_idx(self) -> int:
        self.idx += 1
        return self.idx - 1

    def _next_job(self, open_trials: list[Trial]):
        for tr in open_trials:
            if tr.jobs:
                seed, ov = tr.jobs.pop(0)
                return tr, seed, ov
        if st.budget_left(self.study, int(self.o.n_trials)) <= 0:
            self._fail_stale()  # a dead process's trials come back as waiting ones
            if st.budget_left(self.study, int(self.o.n_trials)) <= 0:
                return None
        trial = self.study.ask(self.space)
        if not st.within_budget(self.study, trial, int(self.o.n_trials)):
            return None
        self.heart.add(trial.number)
        trial.set_user_attr("launcher", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("seeds", [self.base_seed + j for j in range(self.k)])
        params = [override(k, v) for k, v in trial.params.items()]
        tr = Trial(trial)
        for j in range(self.k):
            seed = self.base_seed + j
            sub = f"trial={trial.number:03d}/seed={seed}"
            tr.jobs.append((seed, [*self.fixed, *params, f"++trial={trial.number}", f"seed={seed}",
                                   f"hydra.sweep.subdir='{sub}'"]))
        open_trials.append(tr)
        return self._next_job(open_trials)

    def _tell(self, tr: Trial, console) -> None:
        from optuna.trial import TrialState

        trial, outs = tr.trial, [o for _, o in sorted(tr.outcomes, key=lambda x: x[0])]
        if self.storage.get_trial(st.trial_id(self.storage, self.study, trial.number)).state.is_finished():
            self.heart.remove(trial.number)  # failed as stale meanwhile: its copy counts, not this
            console.print(f"[yellow]\\[search] trial {trial.number} was failed as stale while it ran "
                          f"(heartbeats delayed past grace_s); its queued copy counts instead[/yellow]")
            return
        trial.set_user_attr("runs", [o["run_dir"] for o in outs])
        statuses = [o["status"] for o in outs]
        try:
            if all(s == "completed" for s in statuses):
                per_seed = [o["values"] for o in outs]
                trial.set_user_attr("per_seed", per_seed)
                means = [sum(v[i] for v in per_seed) / len(per_seed) for i in range(len(self.objectives))]
                # skip_if_finished: a trial whose beats a busy database delayed past the grace period
                # was failed (and queued again) by another process; its result is then not counted
                self.study.tell(trial, means[0] if len(means) == 1 else means, skip_if_finished=True)
                shown = ", ".join(f"{k}={v:.4g}" for k, v in zip(self.objectives, means))
            elif "pruned" in statuses:
                self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                shown = "pruned"
            else:
                bad = next(o for o in outs if o["status"] != "completed")
                trial.set_user_attr("error", f"{bad['status']}: {bad['error'] or ''}"[:500])
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                shown = f"[yellow]{bad['status']}[/yellow]"
        finally:
            self.heart.remove(trial.number)
        params = " ".join(override(k, v) for k, v in trial.params.items())
        console.print(f"[cyan]\\[search][/cyan] trial {trial.number}: {shown} ({params})", soft_wrap=True)

    # ------------------------------------------------------------------ confirmation
    def _confirm(self, console) -> dict | None:
        """Rerun the best parameters with seeds the search never used: the best trial's own value
        is the maximum over many noisy trials, biased upwards; these runs are not."""
        n = int(self.o.confirm_seeds)
        if n <= 0:
            return None
        if len(self.directions) > 1:
            console.print("[yellow]\\[search] confirm_seeds: not run for several objectives (no single best)[/yellow]")
            return None
        if st.running_trials(self.study):
            console.print("[yellow]\\[search] other processes still run trials: the last one to finish confirms[/yellow]")
            return None
        try:
            best = self.study.best_trial
        except ValueError:
            console.print("[yellow]\\[search] no completed trial: nothing to confirm[/yellow]")
            return None
        if self.study.user_attrs.get("confirmed_by"):
            return self.study.user_attrs.get("confirmation")
        self.study.set_user_attr("confirmed_by", f"{socket.gethostname()}:{os.getpid()}")
        seeds = [self.base_seed + self.k + i for i in range(n)]  # never used by the search
        params = [override(k, v) for k, v in best.params.items()]
        runner = make_runner(self.launcher, self.n_jobs)
        queue = [(s, [*self.fixed, *params, f"seed={s}", f"hydra.sweep.subdir='confirm/seed={s}'"]) for s in seeds]
        console.print(f"[cyan]\\[search][/cyan] confirming trial {best.number} with seeds {seeds}")
        extra = ["test/acc"] if "test/acc" not in self.objectives else []
        results, in_flight = {}, {}
        while queue or in_flight:
            while queue and len(in_flight) < self.n_jobs:
                s, ov = queue.pop(0)
                in_flight[runner.submit(self._next_idx(), ov)] = s
            for f in runner.wait(set(in_flight)):
                s = in_flight.pop(f)
                out = job_outcome(f, self.objectives)
                results[s] = {"status": out["status"], "value": out["values"][0] if out["values"] else None,
                              **{k: out["metrics"].get(k) for k in extra}, "run_dir": out["run_dir"]}
        confirmation = {"trial": best.number, "params": best.params, "search_value": best.value,
                        "objective": self.objectives[0], "seeds": seeds, "runs": [results[s] for s in seeds]}
        self.study.set_user_attr("confirmation", confirmation)
        return confirmation


def check_search(cfg: DictConfig, arguments: list[str]) -> None:
    """Everything a search would refuse, refused before any trial (train.py's pre-check): the
    space, the objectives, honesty, the sampler, and every bound against the schema."""
    from src.sweeps.optuna_space import check_space

    o = cfg.hydra.sweeper
    _, extra = split_arguments(arguments)
    space = {**(parse_space(o.params) if o.params or not extra else {}), **extra}
    directions = directions_of(o)
    check_honest(objectives_of(o, cfg, len(directions)), cfg)
    st.make_sampler(str(o.sampler), o.seed, space, len(directions))
    st.make_pruner(str(o.pruner))
    check_counts(o)
    check_space(cfg, space)
