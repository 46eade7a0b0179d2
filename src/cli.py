"""Command-line guards: bad choices are refused in one line before Hydra composes anything."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from src.errors import UserError, lightning_misconfiguration

from src.compose import CONF_DIR  # noqa: E402


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(argv: list[str]) -> None:
    """Refuse ``model=nope`` (and each value of a sweep ``activation=relu,nope``) with the options."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    check_arguments(argv)
    parser = OverridesParser.create()
    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = parser.parse_overrides(args)
    except Exception as e:
        bad = next((a for a in args if not _parses(parser, a)), None)
        hint = (" (a list ends without a comma; a space after a comma splits it into two arguments: "
                "drop the space or quote the whole argument)") if bad and bad.endswith(",") else ""
        raise UserError((f"cannot read the argument '{bad}'{hint}: " if bad else "") + " ".join(str(e).split())) from None
    for o in overrides:
        group = o.key_or_group
        # hydra/... groups also hold Hydra's own options (hydra/launcher=joblib): Hydra checks those
        if o.is_delete() or o.package or group.startswith("hydra") or not (CONF_DIR / group).is_dir():
            continue
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
        elif isinstance(o.value(), list):  # logger=[default,mlflow]: a list of options of one group
            values = [str(v) for v in o.value()]
        else:
            values = [o.get_value_element_as_str()]
        for v in values:
            if v not in ("null", "None") and v not in _options(group):
                raise UserError(f"unknown {group} '{v}': choose one of {', '.join(_options(group))} (conf/{group}/)")


# Hydra's flags that take the next argument as their value (--cfg job, -cn train, --info plugins)
VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
               "-cd", "--experimental-rerun", "--info", "-i"}


def check_arguments(argv: list[str]) -> None:
    """Every argument is a flag, a flag's value or an override: a bare word is most often the second
    half of `activation=relu, tanh`, which the shell split at the space (Hydra's grammar error would
    name neither)."""
    for i, a in enumerate(argv):
        if not a or a.startswith(("-", "~")) or "=" in a or (i and argv[i - 1] in VALUE_FLAGS):
            continue
        prev = argv[i - 1] if i else ""
        if prev.endswith(",") and "=" in prev:
            raise UserError(f"argument '{a}' is not key=value: the shell split '{prev} {a}' at the space; drop "
                            f"the space ({prev}{a}) or quote the whole argument ('{prev} {a}')")
        raise UserError(f"argument '{a}' is not key=value: write it as key=value, or quote a value that has "
                        f"spaces (see `python train.py --help`)")


def _parses(parser, arg: str) -> bool:
    try:
        parser.parse_overrides([arg])
        return True
    except Exception:
        return False


INFO_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def _job_overrides(argv: list[str]) -> list[list[str]]:
    """The override list of every job the command would launch (a sweep expanded)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if "=" in a and not a.startswith("-")
            and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if not ({"-m", "--multirun"} & set(argv)):
        return [args]
    parsed = OverridesParser.create().parse_overrides(args)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_jobs(argv: list[str]) -> None:
    """Compose and validate every job's config; check the output folder can be written."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src import precheck
    from src.config_schema import validate

    if INFO_FLAGS & set(argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    _check_pack_arguments(argv)
    if {"-m", "--multirun"} & set(argv) and _check_search(argv):
        return
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], object] = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for job in _job_overrides(argv):
            # jobs that differ only in the seed share one composition (Hydra takes ~0.3 s a job)
            setting = tuple(o for o in job if not o.startswith("seed="))
            new = setting not in composed
            if new:
                try:
                    composed[setting] = compose("train", overrides=job)
                except Exception as e:
                    raise precheck.composition_error(e, job, compose) from None
            cfg = composed[setting]
            for o in parser.parse_overrides([o for o in job if o.startswith("seed=")]):
                OmegaConf.update(cfg, "seed", o.value(), merge=False)
            validate(cfg)  # the schema's values first: no import of torch or Lightning before them
            if new:
                _check_pack(cfg, argv)  # before _check_config: it needs no import of torch
                _check_config(cfg, job, _runs_here(argv))
    GlobalHydra.instance().clear()
    from src.run_config import check_resumed_jobs

    check_resumed_jobs(argv, _job_overrides(argv))  # resume=true keeps only runs of the same config
    _check_writable(argv)


def _check_search(argv: list[str]) -> bool:
    """With hydra/sweeper=optuna: check the search (space, objectives, bounds) and its one job
    config; False for a grid sweep (then every job is checked as usual)."""
    from hydra import initialize_config_dir

    from src.config_schema import validate
    from src.sweeps.optuna_search import check_search

    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:  # as -m composes it: hydra.sweeper.params.* are sweep syntax, legal only in a multirun
            cfg = GlobalHydra.instance().config_loader().load_configuration(
                "train", overrides=args, run_mode=RunMode.MULTIRUN)
        except Exception:
            return False  # not composable as one config: checked job by job below (and errors said there)
    if "optuna" not in str(cfg.hydra.sweeper.get("_target_", "")).lower():
        return False
    check_search(cfg, [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))])
    validate(cfg)
    job = cfg.copy()
    OmegaConf.update(job, "trial", 0, force_add=True)  # as the sweeper gives each trial's job: check_pack refuses it
    _check_pack(job, argv)
    _check_config(cfg, [a for a in args if not a.lstrip("+~").startswith(("hydra.", "hydra/"))], _runs_here(argv))
    _check_writable(argv)
    return True


def _runs_here(argv: list[str]) -> bool:
    """False when a launcher runs the jobs on other machines (SLURM, Ray), whose GPUs and cores the
    pre-check cannot see from here."""
    launchers = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("hydra/launcher=")]
    return not (launchers and launchers[-1] in ("slurm", "ray"))


def _launcher(argv: list[str]) -> str:
    """The launcher a -m command picks (hydra/launcher=...), `parallel` when it picks none."""
    launchers = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("hydra/launcher=")]
    return launchers[-1] if launchers else "parallel"


def _check_pack_arguments(argv: list[str]) -> None:
    """``pack_seeds`` belongs to the parallel launcher, which gives it to a fused seed pack's job."""
    given = next((a for a in argv if a.lstrip("+~").split("=", 1)[0] == "pack_seeds"), None)
    if given is not None:
        raise UserError(f"{given}: pack_seeds is set by the launcher; use seeds_per_job=K (or auto) with -m to "
                        f"train a setting's seeds as packs")


def _check_pack(cfg, argv: list[str]) -> None:
    """A sweep job with seeds_per_job other than 1 (src/sweeps/packing.py): a valid size, a launcher
    that packs (only the parallel one groups jobs) and a config a pack can train (src/packs/support.py).
    A single run (no -m) has nothing to pack and ignores the key."""
    from src.errors import ConfigError
    from src.packs.support import check_pack, requested_size

    value = cfg.get("seeds_per_job", 1)
    if not {"-m", "--multirun"} & set(argv) or requested_size(value) == 1:
        return
    if (launcher := _launcher(argv)) != "parallel":
        raise ConfigError(f"seeds_per_job={value}: packs run with the parallel launcher only (hydra/launcher={launcher} "
                          f"runs each job alone): drop hydra/launcher={launcher}, or set seeds_per_job=1")
    check_pack(cfg)


def _check_config(cfg, job: list[str], here: bool = True) -> None:
    """What the schema cannot say (src/precheck.py): + keys nothing reads, options a _target_ does not
    take, the constructors' own checks, then this machine's GPU, cores and the training split's size."""
    from src import precheck

    precheck.check_added_keys(cfg, job)
    if here:  # torch only (no Lightning): before the checks that import the targets
        precheck.check_machine(cfg)
    # the nodes the command changed first: a misspelt optimizer key is found after importing torch only
    precheck.check_targets(cfg, first=[a.lstrip("+~").split(".")[0] for a in job])
    from src.datamodules import build_datamodule  # Lightning: only once the checks above have passed

    _check_builds(cfg.activation)
    _check_builds(cfg.data, build_datamodule)
    precheck.check_batch_size(cfg)


def _check_builds(node, build=None) -> None:
    """Build the activation factory / the data module (and its source) once: their constructors
    check what the schema cannot (a formula, [low, high] pairs) and read no file, so this fails
    before any data."""
    from hydra.utils import instantiate

    try:
        (build or instantiate)(node)
    except Exception as e:
        cause = user_error_in(e)
        raise UserError(str(cause) if cause else " ".join(str(e).split())) from None


def _check_writable(argv: list[str]) -> None:
    """Create the static part of the run/sweep folder now, so a bad location fails in one line."""
    key = "hydra.sweep.dir=" if {"-m", "--multirun"} & set(argv) else "hydra.run.dir="
    given = [a.split("=", 1)[1] for a in argv if a.startswith(key)]
    target = given[-1] if given else "outputs"
    static = Path(target.split("${", 1)[0] or ".")
    try:
        static.mkdir(parents=True, exist_ok=True)
        probe = static / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write run outputs to {static}: {e.strerror or e}; "
                        f"choose a writable folder with {key}...") from None


@contextlib.contextmanager
def one_line_errors():
    """Turn a UserError into ``error: ...`` on stderr and exit status 2."""
    try:
        yield
    except Exception as e:
        cause = user_error_in(e)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The UserError behind ``exc``, also when hydra.utils.instantiate wrapped it. Lightning's
    MisconfigurationException counts as one: it always names an option the user set."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, UserError):
            return exc
        if (misconfigured := lightning_misconfiguration(exc)) is not None:
            return misconfigured
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
