"""The pre-check's key, target and machine checks (src/cli.py's check_jobs runs them on every job's
composed config before any job starts): a key nothing reads, an option a `_target_` does not take, a
misspelt key (with the nearest real one), a GPU that is not there, more CPU processes than cores, a
batch larger than the training split. Each is one ConfigError naming the key and the fix."""
from __future__ import annotations

import difflib
import inspect
import re

from omegaconf import DictConfig, OmegaConf

from src.compose import CONF_DIR
from src.errors import ConfigError, UserError

# Targets whose **kwargs are passed on to another callable: what that one takes (plus the keys the
# target itself pops) is allowed, nothing else. build_trainer pops estimate_minutes and threads;
# SAM passes them to the `_target_` of its own base_optimizer key ("@" names that key).
FORWARDS = {"src.lit.trainer.build_trainer": ("lightning.Trainer", ("estimate_minutes", "threads")),
            "src.lit.sam.SAM": ("@base_optimizer", ())}
# Targets whose **kwargs truly take anything: the activation factory passes them to the activation,
# whose own constructor is run by the pre-check (src/cli.py's _check_builds) and refuses a bad one.
OPEN = ("src.models.activations.activation_factory",)
# The data group is checked by its builder (src/datamodules/build.py): it knows what its source reads.
OWN_CHECK = ("data", "hydra")


def flat_keys(cfg: DictConfig) -> list[str]:
    """Every dotted key of the config (nodes and leaves), Hydra's own settings left out."""
    out: list[str] = []

    def walk(node, prefix: str) -> None:
        for k, v in node.items():
            out.append(prefix + str(k))
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    walk(container, "")
    return out


def nearest(key: str, candidates: list[str]) -> str | None:
    found = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return found[0] if found else None


def composition_error(error: Exception, job: list[str], compose) -> UserError:
    """Hydra's multi-line "Could not override 'optimzer.lr'. To append to your config use +..." as
    one line that names the nearest real key instead (adding the misspelt key would do nothing)."""
    text = " ".join(str(error).split())
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if not m:
        return UserError(text + " (see `python train.py --cfg job` for the keys)")
    key = m.group(1)
    rest = [o for o in job if o.lstrip("+~").split("=", 1)[0] != key]
    try:
        keys = flat_keys(compose("train", overrides=rest))
    except Exception:
        keys = []
    if key in keys:  # not a misspelling (e.g. a value of the wrong type): Hydra's words, on one line
        return UserError(text)
    near = nearest(key, keys)
    hint = f"did you mean {near}?" if near else "see `python train.py --cfg job` for the keys"
    return UserError(f"{key} is not a key of the config: {hint}")


def _params(target: str, fn, node: dict) -> set[str] | None:
    """The keyword names ``fn`` takes; None when it takes anything (or its signature is unknown)."""
    params: set[str] = set()
    callables = [c.__init__ for c in inspect.getmro(fn) if "__init__" in vars(c)] if inspect.isclass(fn) else [fn]
    for i, c in enumerate(callables):  # a class whose __init__ has **kwargs passes them to its base class's
        try:
            sig = inspect.signature(c)
        except (TypeError, ValueError):
            return None
        params |= {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return params
        if i == 0 and target in FORWARDS:
            return _forwarded(target, node, params)
        if i == 0 and (target in OPEN or not inspect.isclass(fn)):
            return None  # a function's **kwargs: where they go is unknown here
    return params


def _forwarded(target: str, node: dict, params: set[str]) -> set[str] | None:
    from hydra.utils import get_object

    onward, popped = FORWARDS[target]
    if onward.startswith("@"):
        inner = node.get(onward[1:])
        onward = inner.get("_target_") if isinstance(inner, dict) else None
        if not isinstance(onward, str) or "${" in onward:
            return None
    more = _params(onward, get_object(onward), {})
    return None if more is None else params | more | set(popped)


def check_targets(cfg: DictConfig, first: list[str] = ()) -> None:
    """Every option of a ``_target_`` node must be a parameter of that callable: Hydra would pass an
    unknown one on and the job would end in a TypeError, after its run dir and data exist."""
    from hydra.utils import get_object

    container = OmegaConf.to_container(cfg, resolve=False)

    def walk(node: dict, path: str) -> None:
        target = node.get("_target_")
        if isinstance(target, str) and "${" not in target:
            try:
                fn = get_object(target)
            except Exception as e:
                raise ConfigError(f"{path}._target_={target} cannot be imported ({type(e).__name__}): "
                                  f"check the module and name") from None
            params = _params(target, fn, node)
            for k in node:
                if params is None or str(k).startswith("_") or k in params:
                    continue
                near = nearest(str(k), sorted(params))
                hint = (f"did you mean {path}.{near}?" if near else
                        f"remove it (it takes {', '.join(sorted(params)[:12])}{', ...' if len(params) > 12 else ''})")
                raise ConfigError(f"{path}.{k} is not an option of {target}: {hint}")
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{path}.{k}")

    for k in sorted(container, key=lambda k: k not in first):  # ``first``: top-level keys checked first
        if isinstance(container[k], dict) and k not in OWN_CHECK:
            walk(container[k], str(k))


def check_added_keys(cfg: DictConfig, job: list[str]) -> None:
    """A ``+key=value`` is read only when it lands in a node with a ``_target_`` (checked against its
    signature by check_targets), in the data group (its builder checks) or in a schema group whose
    keys are all known (lit.mixup): anything else would be ignored without a word."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    from src.config_schema import CLOSED

    for o in OverridesParser.create().parse_overrides([a for a in job if a.startswith("+")]):
        key = o.key_or_group
        if o.type not in (OverrideType.ADD, OverrideType.FORCE_ADD) or o.package or (CONF_DIR / key).is_dir():
            continue  # +experiment=x and the like: a config group option (checked by check_group_choices)
        parts = key.split(".")
        if parts[0] in OWN_CHECK:
            continue
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        if any(p in CLOSED or _has_target(cfg, p) for p in prefixes):
            continue
        top = _top_level_keys()  # the misspelt +optimzer.lr made a node optimzer: not a candidate
        near = nearest(key, [k for k in flat_keys(cfg) if k != key and (k.split(".")[0] in top or k.split(".")[0] != parts[0])])
        hint = f"did you mean {near}=...?" if near else "see `python train.py --cfg job` for the keys"
        raise ConfigError(f"+{key}: nothing reads {key}, its value would be ignored: {hint}")


def _top_level_keys() -> set[str]:
    """Top-level keys of the config before the command's + keys: conf/train.yaml's and its groups'."""
    return {p.name for p in CONF_DIR.iterdir() if p.is_dir()} | set(OmegaConf.load(CONF_DIR / "train.yaml"))


def _has_target(cfg: DictConfig, key: str) -> bool:
    node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    return isinstance(node, DictConfig) and "_target_" in node


def check_machine(cfg: DictConfig) -> None:
    """What only this machine can say: is the GPU there, are there cores for the CPU processes."""
    sel = lambda key, default=None: OmegaConf.select(cfg, key, default=default)  # noqa: E731
    accelerator, devices = str(sel("trainer.accelerator", "auto")), sel("trainer.devices", 1)
    if accelerator in ("gpu", "cuda", "auto"):
        # counted through NVML: CUDA itself stays uninitialised until a sweep worker's GPU slot has set
        # CUDA_VISIBLE_DEVICES (src/sweeps/slots.py); honours the tests' fake GPUs
        from src.sweeps.slots import visible_gpus

        has_gpu = bool(visible_gpus())
        if accelerator != "auto" and not has_gpu:
            raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU "
                              f"(no CUDA device is visible): use trainer.accelerator=cpu or auto")
        on_cpu = not has_gpu
    else:
        on_cpu = accelerator == "cpu"
    from src.sweeps.slots import cpu_cores

    cores = cpu_cores()
    if on_cpu and isinstance(devices, int) and devices > cores:
        raise ConfigError(f"trainer.devices={devices} would start {devices} training processes on {cores} CPU "
                          f"cores: use trainer.devices={cores} or fewer")


def check_batch_size(cfg: DictConfig) -> None:
    """A batch larger than the training split makes every epoch one step: refused where the split's
    size is known without reading the data (the source's known_counts)."""
    from hydra.utils import get_object

    sel = lambda key, default=None: OmegaConf.select(cfg, key, default=default)  # noqa: E731
    target, batch = sel("data.source._target_"), sel("data.batch_size")
    if not isinstance(target, str) or not isinstance(batch, int):
        return
    try:
        counts = getattr(get_object(target), "known_counts", None)
    except Exception:
        return
    if not isinstance(counts, tuple) or not counts or not isinstance(counts[0], int):
        return  # unknown, or read from the files (CIFAR-100/SVHN's property): not checked here
    n = counts[0] * (sel("data.train_fraction", 1.0) or 1.0)
    val = sel("data.val_size", 0) or 0
    n -= val * n if isinstance(val, float) and val < 1 else val
    folds = sel("data.folds", 0) or 0
    n = int(n * (folds - 1) / folds) if folds > 1 else int(n)
    if 0 < n < batch:
        raise ConfigError(f"data.batch_size={batch} is larger than the training split ({n:,} images of "
                          f"{sel('data.name', 'the data')}): every epoch would be one step; use at most "
                          f"data.batch_size={n}")
