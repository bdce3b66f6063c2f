"""Command-line parsing as etcdctl does it: Go's ``flag`` package behind urfave/cli v1.22.

Rules reproduced (checked against etcdctl 3.4.23):
- ``-name`` and ``--name`` are the same; ``-name=value``; a non-bool flag takes the next argument even when
  it starts with ``-``; a bool flag only takes ``=value``; parsing stops at the first non-flag argument or
  after ``--`` (which is consumed); a lone ``-`` is an argument.
- Before a *command's* flags are parsed, urfave reorders its arguments: every argument naming one of the
  command's flags moves to the front, and so does the argument right after it when that one does not start
  with ``-`` (even after a bool flag, where Go's parser then stops: ``get -q /k --sort`` does not sort).
  Unknown ``-x`` arguments stay in place and become plain arguments.  Nothing after ``--`` is moved.
- Error texts are Go's: ``flag provided but not defined: -x``, ``flag needs an argument: -x``,
  ``invalid value "v" for flag -x: parse error``, ``invalid boolean value "v" for -x: parse error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class FlagError(Exception):
    pass


class HelpRequested(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Flag:
    """``names``: the long name first, then aliases ("recursive", "r").  ``kind``: bool|string|strings|int|duration."""

    names: tuple[str, ...]
    kind: str
    usage: str
    default: Any = None
    placeholder: str = "value"

    @property
    def name(self) -> str:
        return self.names[0]

    def initial(self) -> Any:
        if self.kind == "strings":  # urfave's StringSliceFlag: every occurrence adds a value
            return []
        if self.default is not None:
            return self.default
        return {"bool": False, "string": "", "int": 0, "duration": 0.0}[self.kind]

    def help_name(self) -> str:
        parts = []
        for n in self.names:
            dashes = "--" if len(n) > 1 else "-"
            parts.append(dashes + n if self.kind == "bool" else f"{dashes}{n} {self.placeholder}")
        return ", ".join(parts)

    def help_usage(self) -> str:
        if self.kind == "int":
            return f"{self.usage} (default: {self.default or 0})"
        if self.kind == "string" and self.default:
            return f'{self.usage} (default: "{self.default}")'
        if self.kind == "duration":
            return f"{self.usage} (default: {format_duration(self.initial())})"
        return self.usage


_BOOL_WORDS = {
    "1": True,
    "t": True,
    "T": True,
    "TRUE": True,
    "true": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "FALSE": False,
    "false": False,
    "False": False,
}

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration``, in seconds."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(text)
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's ``Duration.String`` for whole and fractional seconds (enough for flag defaults)."""
    if seconds == 0:
        return "0s"
    if seconds == int(seconds):
        whole = int(seconds)
        h, rem = divmod(whole, 3600)
        m, s = divmod(rem, 60)
        if h:
            return f"{h}h{m}m{s}s"
        if m:
            return f"{m}m{s}s"
        return f"{s}s"
    return f"{seconds:g}s"


def _go_int(text: str) -> int:
    return int(text, 0) if not re.fullmatch(r"[+-]?0\d+", text) else int(text, 8)


def _convert(flag: Flag, name: str, raw: str) -> Any:
    try:
        if flag.kind == "int":
            return _go_int(raw)
        if flag.kind == "duration":
            return parse_duration(raw)
    except ValueError:
        raise FlagError(f'invalid value "{raw}" for flag -{name}: parse error') from None
    return raw


def parse(flags: list[Flag], args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Go ``FlagSet.Parse``: (values by long name, remaining arguments).  -h/-help raise HelpRequested
    unless defined."""
    index = {n: f for f in flags for n in f.names}
    values = {f.name: f.initial() for f in flags}
    seen: dict[str, str] = {}
    i = 0
    while i < len(args):
        s = args[i]
        if len(s) < 2 or s[0] != "-":
            break
        dashes = 1
        if s[1] == "-":
            dashes = 2
            if len(s) == 2:
                i += 1
                break
        name = s[dashes:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {s}")
        i += 1
        value: str | None = None
        if "=" in name[1:]:
            name, value = name.split("=", 1)
        flag = index.get(name)
        if flag is None:
            if name in ("help", "h"):
                raise HelpRequested()
            raise FlagError(f"flag provided but not defined: -{name}")
        if flag.kind == "bool":
            if value is None:
                values[flag.name] = True
            elif value in _BOOL_WORDS:
                values[flag.name] = _BOOL_WORDS[value]
            else:
                raise FlagError(f'invalid boolean value "{value}" for -{name}: parse error')
        else:
            if value is None:
                if i >= len(args):
                    raise FlagError(f"flag needs an argument: -{name}")
                value = args[i]
                i += 1
            if flag.kind == "strings":
                values[flag.name] = [*values[flag.name], value]
            else:
                values[flag.name] = _convert(flag, name, value)
        if flag.name in seen and seen[flag.name] != name:
            # urfave's normalizeFlags: "-r" and "--recursive" together are refused.
            raise FlagError(f"Cannot use two forms of the same flag: {seen[flag.name]} {name}")
        seen[flag.name] = name
    return values, args[i:]


def reorder(flags: list[Flag], args: list[str]) -> list[str]:
    """urfave/cli v1.22 ``reorderArgs``: the command's own flags (and the argument after each) first."""
    known = {n for f in flags for n in f.names}
    moved: list[str] = []
    rest: list[str] = []
    may_be_value = False
    for i, arg in enumerate(args):
        if arg == "--":
            rest.extend(args[i:])
            break
        if may_be_value and not arg.startswith("-"):
            may_be_value = False
            moved.append(arg)
        elif arg != "-" and arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] in known:
            moved.append(arg)
            may_be_value = "=" not in arg
        else:
            rest.append(arg)
    return moved + rest


def format_flags(flags: list[Flag]) -> list[str]:
    """Help lines: names padded to the widest plus two spaces (Go's tabwriter)."""
    names = [f.help_name() for f in flags]
    width = max((len(n) for n in names), default=0) + 2
    return [n.ljust(width) + f.help_usage() for n, f in zip(names, flags, strict=True)]
