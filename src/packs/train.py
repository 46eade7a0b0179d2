"""``train.py`` for a fused seed pack: the parallel launcher (seeds_per_job, src/sweeps/packing.py)
hands one job the seeds of one setting (``pack_seeds``); this trains them as one vectorised model
(src/packs/module.py) and leaves every member the run folder its own job would have left.

Per member, as train.py does for one run: a completed result is kept (resume=true) or refused, an
unfinished one continues from its own last.ckpt, and the outcome is always written -- completed,
diverged (the moment its loss turns NaN; the others train on) or failed. Members killed at
different epochs resume in groups of equal progress, one group after another.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from src.packs.members import Member, members_of, write_hydra_files


def train_pack(cfg: DictConfig) -> float:
    from src.provenance import utc_now
    from src.results import task_overrides
    from src.run_lock import lock_run_dir, release_run_dirs
    from src.runs import FAILED_VALUE, log_outcome, previous_result, read_status

    from src.packs.support import check_pack

    start, started = time.perf_counter(), utc_now()
    check_pack(cfg)  # the pre-check refused these already; a job started another way is refused here
    members = members_of(cfg, task_overrides())
    write_hydra_files(members, Path(cfg.paths.output_dir))
    todo = [m for m in members if previous_result(m.cfg) is None]  # resume=true keeps completed ones
    release_run_dirs()
    try:
        for m in todo:
            lock_run_dir(m.dir, alongside=True)
        for group in _by_progress(todo):
            for chunk in _chunks(cfg, group):  # as many members at once as fit on the GPU
                _train_group(chunk, [m.seed for m in members], start, started)
    finally:
        release_run_dirs()
        for m in members:
            log_outcome(m.dir)
    value = (read_status(members[0].dir) or {}).get(cfg.optimized_metric)  # the leader's, as its own job returns
    return value if isinstance(value, (int, float)) else FAILED_VALUE


def _last_checkpoint(m: Member) -> dict | None:
    from src.runs import resume_checkpoint

    path = resume_checkpoint(m.cfg)
    return torch.load(path, map_location="cpu", weights_only=True) if path else None


def _by_progress(todo: list[Member]) -> list[list[tuple[Member, dict | None]]]:
    """Members whose last checkpoints are at the same step train together (a kill between two
    members' checkpoint writes can leave them one epoch apart)."""
    from src.packs.checkpoints import progress

    groups: dict[tuple, list] = {}
    for m in todo:
        ckpt = _last_checkpoint(m)
        groups.setdefault(progress(ckpt) if ckpt else (-1, -1), []).append((m, ckpt))
    return list(groups.values())


def _chunks(cfg: DictConfig, group: list) -> list[list]:
    from src.packs.memory import plan_chunks

    out, at = [], 0
    for size in plan_chunks(cfg, len(group)):
        out.append(group[at:at + size])
        at += size
    return out


def _record(m: Member, record: dict) -> None:
    from src.results import write_json

    write_json(m.dir / "metrics.json", {**record, "overrides": m.overrides, "seed": m.seed})


def _train_group(group: list[tuple[Member, dict | None]], job_seeds: list[int], start: float, started: str) -> None:
    from src.lit.classifier import Diverged
    from src.runs import diverged_record, in_multirun, one_line

    members = [m for m, _ in group]
    recorded: set[int] = set()

    def diverged(k: int, epoch: int, step: int) -> None:
        d = Diverged(epoch, step)
        _record(members[k], diverged_record(d, {}))
        recorded.add(k)
        print(f"[diverged] {members[k].dir}: {d} (the pack's other members train on)", file=sys.stderr)

    try:
        _fit_and_test(group, job_seeds, start, started, diverged, recorded)
    except Diverged:
        pass  # every member diverged, each recorded when it did
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        for k, m in enumerate(members):
            if k not in recorded:
                _record(m, {"status": "failed", "error": one_line(e)})
        if not in_multirun():
            raise
        print(f"[failed] pack {', '.join(str(m.dir) for m in members)}: {one_line(e)}", file=sys.stderr)


def _fit_and_test(group, job_seeds: list[int], start: float, started: str, diverged, recorded: set[int]) -> None:
    import lightning as L
    from hydra.utils import instantiate

    from src.datamodules import build_datamodule
    from src.packs.checkpoints import PackCheckpoint
    from src.packs.data import PackData
    from src.packs.logger import PackLogger
    from src.packs.module import PackModule
    from src.packs.rng import MemberRNG
    from src.results import collect, log_hparams, write_json

    members = [m for m, _ in group]
    lead = members[0].cfg
    rng = MemberRNG([m.seed for m in members])
    classifiers, datamodules = [], []
    for k, m in enumerate(members):  # each built exactly as train.py builds its standalone run
        L.seed_everything(m.seed, workers=True, verbose=False)
        datamodules.append(build_datamodule(m.cfg.data))
        classifiers.append(instantiate(m.cfg.lit, model=instantiate(m.cfg.model)))
        rng.capture(k)
    pack = PackModule(classifiers, datamodules, rng, [m.dir for m in members])
    pack.clock.session_start = start
    pack.on_diverged = diverged
    loggers = [[instantiate(lg) for lg in (m.cfg.get("logger") or {}).values()] for m in members]
    callbacks = [instantiate(c) for c in (lead.get("callbacks") or {}).values()
                 if not str(c.get("_target_", "")).endswith("Checkpoint")]  # each member's: PackCheckpoint
    checkpointing = lead.trainer.get("enable_checkpointing", True)
    if checkpointing:
        callbacks.append(PackCheckpoint([m.dir for m in members]))
    # PackCheckpoint is a Checkpoint callback: Lightning then adds no ModelCheckpoint of its own
    trainer = instantiate(lead.trainer, callbacks=callbacks, logger=[PackLogger(loggers, pack.alive)])
    data = PackData(datamodules)
    resume = [c for _, c in group]
    ckpt_path = _merged(resume, members[0].dir) if all(c is not None for c in resume) else None
    try:
        trainer.fit(pack, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    finally:
        if ckpt_path:
            Path(ckpt_path).unlink(missing_ok=True)
    best = _load_best(pack, members) if checkpointing and lead.data.get("val_size") else None
    trainer.test(pack, datamodule=data, verbose=False)
    wall = time.perf_counter() - start
    for k, m in enumerate(members):
        if not pack.alive[k] or k in recorded:
            continue
        metrics = collect(m.cfg, trainer, _MemberView(pack, k), pack.test_results[k], wall, started, m.overrides)
        metrics["tested_weights"] = "final" if best is None else "best_val"
        if best is not None and k in best:  # EMA/SWA: what the member's best checkpoint held
            metrics["averaged_weights"] = best[k]
        # size/members/index: the members trained together (a chunk or resume group of the job's
        # seeds when the GPU or the members' progress split it); job_seeds: all of the job's
        metrics["pack"] = {"size": len(members), "members": [x.seed for x in members], "index": k,
                           "job_seeds": job_seeds,
                           "pack_train_images_per_s": pack.clock.summary()["train_images_per_s"]}
        write_json(m.dir / "metrics.json", metrics)
        recorded.add(k)
        log_hparams(loggers[k], m.cfg, metrics)


def _merged(ckpts: list[dict], lead_dir: Path) -> str:
    """The members' last.ckpt as one pack checkpoint, in a temporary file Lightning resumes from."""
    from src.packs.checkpoints import pack_checkpoint

    path = lead_dir / "checkpoints" / f".pack_resume.tmp{os.getpid()}"
    torch.save(pack_checkpoint(ckpts), path)
    return str(path)


def _load_best(pack, members: list[Member]) -> dict[int, str | None]:
    """With a real hold-out (data.val_size > 0) each member is tested at its own best epoch, as
    train.py tests a standalone run (its epoch_*.ckpt; EMA/SWA: the averaged weights saved there).
    Returns, per member loaded, what its checkpoint says the weights were (``averaged_weights``)."""
    prefix, averaged = "model.", {}
    for k, m in enumerate(members):
        best = max((m.dir / "checkpoints").glob("epoch_*.ckpt"), default=None)
        if best is None or not pack.alive[k]:
            continue
        ckpt = torch.load(best, map_location="cpu", weights_only=True)
        state = ckpt["state_dict"]
        pack.model.load_member_state(k, {key[len(prefix):]: v for key, v in state.items() if key.startswith(prefix)})
        averaged[k] = ckpt.get("averaged_weights")
    return averaged


class _MemberView:
    """What src/results.collect reads of a module, for member k of a pack."""

    def __init__(self, pack, k: int):
        self.device, self.model, self.best_val_epoch = pack.device, pack.members[k].model, pack.best_val_epoch[k]
        self.clock = pack.member_clock(k)
        self.val_acc_best = _Best(pack.best_val[k])


class _Best:
    def __init__(self, value: float | None):
        self.value, self.update_count = value, int(value is not None)

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.value)
