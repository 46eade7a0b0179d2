"""The members of a pack as ordinary runs: each its own config (the leader's with its own seed and
run folder), its own task overrides and its own ``.hydra/`` files, so the report, resume, the live
status line and a later sweep without packs see K ordinary runs."""
from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from src.settings import parse

PACK_KEY = "pack_seeds"


@dataclass
class Member:
    seed: int
    cfg: DictConfig
    dir: Path
    overrides: list[str]


def member_dir(leader_dir: Path, leader_seed, seed) -> Path:
    """The leader's run folder with its ``seed=<n>`` level (conf/hydra/default.yaml's sweep.subdir)
    for this member's seed; a k-fold ``fold=<k>`` level below it stays."""
    parts = list(Path(leader_dir).parts)
    levels = [i for i, p in enumerate(parts) if p == f"seed={leader_seed}"]
    if not levels:
        raise ValueError(f"{leader_dir} has no seed={leader_seed} level: packs need the sweep layout "
                         f"<setting>/seed=<n>/ (hydra.sweep.subdir)")
    parts[levels[-1]] = f"seed={seed}"
    return Path(*parts)


def member_overrides(overrides: list[str], seed) -> list[str]:
    """The job's task overrides as the member's own job would have them: its seed, no pack_seeds."""
    out = []
    for o in overrides:
        kv = parse(o)
        if kv and kv[0] == PACK_KEY:
            continue
        out.append(f"seed={seed}" if kv and kv[0] == "seed" else o)
    return out


def members_of(cfg: DictConfig, overrides: list[str]) -> list[Member]:
    seeds = [int(s) for s in cfg[PACK_KEY]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"pack_seeds={seeds} repeats a seed")
    leader_dir = Path(cfg.paths.output_dir)
    members = []
    for seed in seeds:
        m = copy.deepcopy(cfg)
        out = member_dir(leader_dir, cfg.seed, seed)
        with open_dict(m):
            m.seed = seed
            m.paths.output_dir = str(out)  # a literal: ${hydra:runtime.output_dir} is the leader's
        members.append(Member(seed, m, out, member_overrides(overrides, seed)))
    return members


def write_hydra_files(members: list[Member], leader_dir: Path) -> None:
    """Each member's ``.hydra/`` as Hydra writes it for a job: config.yaml (unresolved, with its
    seed), overrides.yaml (its own) and hydra.yaml (the leader's). Writing overrides.yaml marks the
    member as started for the sweep's live status (src/sweeps/status.py)."""
    src = Path(leader_dir) / ".hydra"
    config = OmegaConf.load(src / "config.yaml") if (src / "config.yaml").exists() else None
    for m in members:
        dst = m.dir / ".hydra"
        dst.mkdir(parents=True, exist_ok=True)
        if config is not None:
            own = copy.deepcopy(config)
            with open_dict(own):
                own.seed = m.seed
            OmegaConf.save(own, dst / "config.yaml")
        if (src / "hydra.yaml").exists() and dst != src:
            shutil.copyfile(src / "hydra.yaml", dst / "hydra.yaml")
        OmegaConf.save(OmegaConf.create(m.overrides), dst / "overrides.yaml")
