"""Each member's checkpoints, written into its own run folder in a standalone run's layout, and a
pack put back together from them on resume.

A member checkpoint is the pack's Lightning checkpoint cut to member k: every stacked tensor of the
model (``model.net.<name>`` [K, ...] -> ``model.<name>``), of an EMA/SWA's raw weights and of the
optimizer state is sliced to ``[k]`` (cloned: saving a view would save the whole stack); loops,
schedulers and callback states are the pack's (shared by all members); ``run_stats`` and
``hyper_parameters`` are the member's own. So the folder holds what a standalone run's holds:
``epoch_<n>.ckpt`` for the best val/acc so far (strictly better, as ModelCheckpoint counts) and
``last.ckpt`` the newest epoch (a link to the best file when this epoch improved,
src/lit/checkpoint.py), each written to a temporary name and renamed into place.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint

NET, PLAIN = "model.net.", "model."
NOT_STACKED = ("step",)  # optimizer state shared by the members (Adam's step count), not per member


def _member_weights(state: dict, k: int) -> dict:
    return {(PLAIN + key[len(NET):] if key.startswith(NET) else key):
            (v[k].clone() if key.startswith(NET) else v) for key, v in state.items()}


def _member_optimizer(state: dict, k: int) -> dict:
    per_param = {idx: {name: (t[k].clone() if torch.is_tensor(t) and name not in NOT_STACKED else t)
                       for name, t in s.items()} for idx, s in state["state"].items()}
    return {**state, "state": per_param}


def member_checkpoint(ckpt: dict, k: int, hparams: dict, run_stats: dict, hparams_name: str | None = None) -> dict:
    out = {key: v for key, v in ckpt.items() if key not in ("state_dict", "current_model_state", "optimizer_states",
                                                             "pack", "hyper_parameters")}
    out["state_dict"] = _member_weights(ckpt["state_dict"], k)
    if "current_model_state" in ckpt:
        out["current_model_state"] = _member_weights(ckpt["current_model_state"], k)
    out["optimizer_states"] = [_member_optimizer(s, k) for s in ckpt.get("optimizer_states", [])]
    out["hyper_parameters"] = dict(hparams)
    if hparams_name:
        out["hparams_name"] = hparams_name
    out["run_stats"] = run_stats
    out["pack"] = {"size": len(ckpt["pack"]["alive"]), "index": k}
    return out


def _stacked_weights(states: list[dict]) -> dict:
    return {(NET + key[len(PLAIN):] if key.startswith(PLAIN) else key):
            (torch.stack([s[key] for s in states]) if key.startswith(PLAIN) else v) for key, v in states[0].items()}


def _stacked_optimizer(states: list[dict]) -> dict:
    per_param = {idx: {name: (torch.stack([st["state"][idx][name] for st in states])
                              if torch.is_tensor(t) and name not in NOT_STACKED else t)
                       for name, t in s.items()} for idx, s in states[0]["state"].items()}
    return {**states[0], "state": per_param}


def pack_checkpoint(members: list[dict]) -> dict:
    """The pack's checkpoint from its members' last.ckpt (all at the same step: train_pack groups
    members by progress)."""
    first = members[0]
    out = {key: v for key, v in first.items() if key not in ("state_dict", "current_model_state", "optimizer_states",
                                                              "run_stats", "hyper_parameters", "pack")}
    out["state_dict"] = _stacked_weights([m["state_dict"] for m in members])
    if "current_model_state" in first:
        out["current_model_state"] = _stacked_weights([m["current_model_state"] for m in members])
    out["optimizer_states"] = [_stacked_optimizer([m["optimizer_states"][i] for m in members])
                               for i in range(len(first.get("optimizer_states", [])))]
    out["pack"] = {"alive": [True] * len(members), "stats": [m.get("run_stats") or {} for m in members]}
    return out


def progress(ckpt: dict) -> tuple[int, int]:
    """(epoch, global step) a checkpoint was saved at: members resume together only when equal."""
    return int(ckpt.get("epoch", -1)), int(ckpt.get("global_step", -1))


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        if path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e


class PackCheckpoint(Checkpoint):
    """Writes every member still training its checkpoints at the end of each training epoch, where
    LatestCheckpoint writes a standalone run's (ModelCheckpoint saves there when every epoch is
    validated): as a Checkpoint callback it runs after the module's own epoch end (its divergence
    check and logs), and a resumed run starts at the next epoch."""

    def __init__(self, dirs: list[Path]):
        self.dirs = [Path(d) / "checkpoints" for d in dirs]
        # a resumed member's best file so far: the one epoch_*.ckpt its folder holds
        self.best: list[Path | None] = [max(d.glob("epoch_*.ckpt"), default=None) for d in self.dirs]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        ckpt = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)  # as trainer.save_checkpoint
        for k, folder in enumerate(self.dirs):
            if not pl_module.alive[k]:
                continue  # a diverged member keeps its last good checkpoint
            folder.mkdir(parents=True, exist_ok=True)
            classifier = pl_module.members[k]
            member = member_checkpoint(ckpt, k, classifier.hparams, pl_module.member_run_stats(k),
                                       getattr(classifier, "_hparams_name", None))
            last = folder / "last.ckpt"
            if pl_module.best_val_epoch[k] == trainer.current_epoch:  # this epoch's val/acc is its best
                best = folder / f"epoch_{trainer.current_epoch:03d}.ckpt"
                _save(member, best)
                if last.exists() or last.is_symlink():
                    last.unlink()
                os.symlink(best.name, last)
                if self.best[k] is not None and self.best[k] != best:
                    self.best[k].unlink(missing_ok=True)
                self.best[k] = best
            else:
                _save(member, last)
