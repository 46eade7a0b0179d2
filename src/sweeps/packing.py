"""Fused seed packs on the launcher's side (issue 25; README "Fused seed packs"): which jobs of a
sweep the parallel launcher (src/sweeps/launch.py) runs together as one pack, and what Hydra's
sweeper gets back for each of them.

A pack is ONE Hydra job: the overrides of its first member (the leader, lowest position in the
sweep) plus ``pack_seeds=[s0,s1,...]`` (the leader's seed first, in sweep order). train() hands it
to src/packs/train.py, which trains every member as one vectorised model and writes every member's
ordinary run folder (the leader's with its ``seed=<leader>`` component replaced by ``seed=<n>``,
src/packs/members.py), as if each seed had been its own job. The launcher still returns one
JobReturn per original job.

``seeds_per_job`` (conf/hydra/parallel_options.yaml) says how many seeds a pack takes:
- ``1``: no packs, every job alone (the default; the launcher's path is the one it always was);
- ``K >= 2``: the jobs whose overrides differ only in ``seed=`` form a group, split into packs of
  up to K consecutive jobs in sweep order (the last pack of a group may be smaller; a pack of one
  is an ordinary job, without ``pack_seeds``). A job never shares a pack with one that differs in
  any other override, ``seeds_per_job`` included;
- ``auto``: see :func:`auto_size`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from src.packs.support import requested_size
from src.settings import parse

AUTO_MAX = 16   # seeds in one pack at most with `auto` (a vectorised model's memory grows with each)


def auto_size(seeds: int, total_jobs: int, gpu_slots: int, gpus: int) -> int:
    """``seeds_per_job=auto``, the one place that decides it:

    - no visible GPU (``gpus == 0``): 1, no packs (a CPU gains nothing from a vectorised model, and
      its parallel jobs already share out the cores);
    - otherwise ``min(16, seeds, ceil(total_jobs / gpu_slots))``: ``seeds`` is the number of jobs
      of this setting (jobs differing only in the seed), ``total_jobs`` all jobs of the launch and
      ``gpu_slots`` the launcher's parallel jobs (GPUs x jobs_per_gpu). Packs no larger than
      total/slots leave at least as many packs as slots, so that every slot still gets work.
    """
    if gpus <= 0:
        return 1
    return max(1, min(AUTO_MAX, seeds, math.ceil(total_jobs / max(1, gpu_slots))))


def seed_of(overrides: Sequence[str]) -> int | None:
    """The job's ``seed=<int>`` override (the last one), None without one or for another value."""
    seed = None
    for kv in map(parse, overrides):
        if kv and kv[0] == "seed":
            seed = kv[1]
    try:
        return int(seed) if seed is not None and str(int(seed)) == str(seed).strip() else None
    except ValueError:
        return None


def requested(overrides: Sequence[str], default: Any = 1) -> int | str:
    """The job's ``seeds_per_job`` (its own override, as the command line gave it to every job),
    else the sweep config's ``default``: a positive int or "auto"."""
    value = default
    for kv in map(parse, overrides):
        if kv and kv[0] == "seeds_per_job":
            value = kv[1]
    return requested_size(value)


def plan_packs(job_overrides: Sequence[Sequence[str]], default: Any = 1, gpu_slots: int = 1,
               gpus: int | None = None) -> list[list[int]]:
    """The launch's jobs as packs: lists of positions into ``job_overrides``, each in sweep order
    (its first is the leader), the packs ordered by their leader. Every position is in exactly one
    pack; with ``seeds_per_job=1`` everywhere each is alone. ``gpus``: visible GPUs (None: counted
    here, only if some job asks for ``auto``)."""
    sizes = [requested(ov, default) for ov in job_overrides]
    if all(k == 1 for k in sizes):
        return [[i] for i in range(len(job_overrides))]
    if gpus is None and "auto" in sizes:
        from src.sweeps.slots import visible_gpus

        gpus = len(visible_gpus())
    groups: dict[tuple, list[int]] = {}   # everything but the seed -> positions, in sweep order
    packs: list[list[int]] = []
    for i, ov in enumerate(job_overrides):
        if sizes[i] == 1 or seed_of(ov) is None:  # no seed to pack by: an ordinary job
            packs.append([i])
            continue
        key = tuple(str(o) for o in ov if (parse(o) or ("",))[0] != "seed")
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        k = sizes[members[0]]  # equal within a group: seeds_per_job is one of its overrides or the default
        if k == "auto":
            k = auto_size(len(members), len(job_overrides), gpu_slots, gpus or 0)
        pack: list[int] = []
        for i in members:
            # a full pack, or a seed given twice (one folder: it cannot be two members), starts the next
            if len(pack) == k or seed_of(job_overrides[i]) in {seed_of(job_overrides[j]) for j in pack}:
                packs.append(pack)
                pack = []
            pack.append(i)
        packs.append(pack)
    return sorted(packs, key=lambda p: p[0])


def pack_overrides(job_overrides: Sequence[Sequence[str]], pack: Sequence[int]) -> list[str]:
    """The one job a pack runs as: its leader's overrides plus ``pack_seeds=[s0,...]`` (none for a
    pack of one, which is an ordinary job)."""
    leader = list(job_overrides[pack[0]])
    if len(pack) < 2:
        return leader
    seeds = ",".join(str(seed_of(job_overrides[i])) for i in pack)
    return [*leader, f"pack_seeds=[{seeds}]"]


def metric_value(run_dir: Path | None, metric: str) -> float:
    """The optimised metric from a member's metrics.json, as train() would have returned it; NaN if
    the member did not complete (or wrote nothing)."""
    from src.results import ENDED_WELL
    from src.runs import read_status

    data = (read_status(run_dir) if run_dir is not None else None) or {}
    value = data.get(metric) if data.get("status") in ENDED_WELL else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def member_returns(ret: Any, members: Sequence[tuple[int, Sequence[str]]], metric: str,
                   dir_of: Callable[[Sequence[str], int], Path | None]) -> dict[int, Any]:
    """One JobReturn per member of a pack whose job returned ``ret``: the member's own overrides,
    its metrics.json value of ``metric`` (NaN if it did not complete) and its run folder. A pack
    job that failed past train() keeps its FAILED return for the leader (Hydra then stops the sweep
    as for any job), its members get NaN. ``dir_of(overrides, idx)``: a job's folder when the
    leader's cannot be derived from (src/sweeps/launch.py's job_dir)."""
    from hydra.core.utils import JobReturn, JobStatus

    leader_idx, leader_ov = members[0]
    try:
        leader_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
    except Exception:
        leader_dir = dir_of(leader_ov, leader_idx)
    out = {}
    for pos, (idx, ov) in enumerate(members):
        run_dir = leader_dir if pos == 0 else _member_dir(leader_dir, seed_of(leader_ov), seed_of(ov))
        if run_dir is None:
            run_dir = dir_of(ov, idx)
        own_metric = next((kv[1] for kv in map(parse, ov) if kv and kv[0] == "optimized_metric"), metric)
        value = metric_value(run_dir, own_metric)
        where = str(run_dir) if run_dir is not None else None
        if pos == 0 and ret.status == JobStatus.COMPLETED:
            out[idx] = dataclasses.replace(ret, overrides=list(ov), _return_value=value, working_dir=where)
        elif pos == 0:
            out[idx] = ret
        else:
            out[idx] = JobReturn(overrides=list(ov), status=JobStatus.COMPLETED, _return_value=value,
                                 working_dir=where, task_name=ret.task_name)
    return out


def _member_dir(leader_dir: Path | None, leader_seed: int | None, seed: int | None) -> Path | None:
    """Where the pack wrote this member (src/packs/members.py's rule, the one train_pack follows);
    None if the leader's folder has no ``seed=<n>`` level (a hand-made hydra.sweep.subdir)."""
    from src.packs.members import member_dir

    if leader_dir is None:
        return None
    try:
        return member_dir(leader_dir, leader_seed, seed)
    except ValueError:
        return None
