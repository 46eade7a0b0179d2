"""Command-line guards: bad choices are refused in one line before Hydra composes anything."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from src.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(argv: list[str]) -> None:
    """Refuse ``model=nope`` (and each value of a sweep ``activation=relu,nope``) with the options."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception as e:
        raise UserError(" ".join(str(e).split())) from None
    for o in overrides:
        group = o.key_or_group
        if o.is_delete() or o.package or not (CONF_DIR / group).is_dir():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        for v in values:
            if v not in ("null", "None") and v not in _options(group):
                raise UserError(f"unknown {group} '{v}': choose one of {', '.join(_options(group))} (conf/{group}/)")


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
    """The UserError behind ``exc``, also when hydra.utils.instantiate wrapped it."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, UserError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
