"""``cfg.data`` to its data module. A ``conf/data/<name>.yaml`` holds the data module's options (the
parameters of its ``_target_``) and, beside them, its dataset's own options, which its ``source:``
node reads by interpolation (``extra: ${data.svhn_extra}``). They stay at ``data.`` level so that the
command line keeps its short, documented keys (``data.svhn_extra=true``); hydra's ``instantiate``
would hand every key of the node to ``_target_``, so the data module gets its own keys and the
built source here."""
from __future__ import annotations

import inspect
import re

from src.errors import ConfigError

# data.name: how results, reports and folder names call the dataset; no class takes it
LABELS = frozenset({"name"})
# ${data.key} anywhere in a value, or ${..key} from directly inside source:
_READ = re.compile(r"\$\{(?:data\.|\.\.)([A-Za-z_]\w*)")


def read_by_source(data) -> set[str]:
    """The ``data.`` keys that the ``source:`` node interpolates."""
    from omegaconf import OmegaConf

    if "source" not in data:
        return set()
    found: set[str] = set()

    def walk(v) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            found.update(_READ.findall(v))

    walk(OmegaConf.to_container(data.source, resolve=False))
    return found


def build_datamodule(data):
    """The data module of ``cfg.data`` (a node of the composed config: interpolations are resolved
    against the whole of it). A key that neither the data module takes nor ``source:`` reads is
    refused in one line: set in a yaml, it would otherwise do nothing without a word."""
    from hydra.utils import get_object, instantiate
    from omegaconf import OmegaConf

    takes = set(inspect.signature(get_object(data._target_)).parameters)
    known = takes | LABELS | read_by_source(data)
    unread = [k for k in data if not str(k).startswith("_") and k not in known]
    if unread:
        raise ConfigError(f"data.{unread[0]} is an option of neither {data._target_} nor its data.source: remove "
                          f"it, or pass it to the source ({unread[0]}: ${{data.{unread[0]}}})")
    node = OmegaConf.to_container(data, resolve=True, throw_on_missing=True)
    return instantiate({k: v for k, v in node.items() if k in takes or str(k).startswith("_")})
