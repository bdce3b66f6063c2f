"""Structured server logs: one line per event, as JSON objects like etcd 3.4's zap logger.

A line looks like::

    {"level":"info","ts":"2026-11-21T02:05:25.123Z","caller":"server/etcdserver.py:414","msg":"became leader","term":2}

``level``, ``ts``, ``caller`` and ``msg`` come first; the event's own fields follow, passed as
``extra={"fields": {...}}`` or through :func:`event`.  ``--logger capnslog`` (given explicitly)
prints capnslog's text line instead, with the fields appended as ``key=value``.

What is logged at which level (the "quiet by default" rule): info is for events an operator
wants to see once (startup, leader change, member change, snapshot, peer connected/lost);
warn for trouble (slow fdatasync, refused peers); anything per request, per heartbeat or per
message is debug, so an idle healthy member prints nothing at the default level.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson

# etcd's --log-level names (config.LOG_LEVELS) as ``logging`` levels.  zap's dpanic, panic and
# fatal all mean "only what stops the member", which the server logs at CRITICAL.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

_ZAP_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
_CAPNS_LETTERS = {"debug": "D", "info": "I", "warn": "W", "error": "E", "fatal": "C"}
_RESERVED = ("level", "ts", "caller", "msg")


def level_name(levelno: int) -> str:
    """The zap name of a ``logging`` level (levels in between round down)."""
    if levelno in _ZAP_NAMES:
        return _ZAP_NAMES[levelno]
    best = "debug"
    for no, name in sorted(_ZAP_NAMES.items()):
        if levelno >= no:
            best = name
    return best


def _iso_ts(created: float) -> str:
    # zap's ISO8601TimeEncoder: millisecond precision, UTC shown as "Z".
    t = time.gmtime(created)
    ms = int((created - int(created)) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms:03d}Z"


def _caller(record: logging.LogRecord) -> str:
    # "package/file.py:line" like zap's short caller encoder.
    parent = os.path.basename(os.path.dirname(record.pathname))
    return f"{parent}/{record.filename}:{record.lineno}"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JSONFormatter(logging.Formatter):
    """One JSON object per record, never spanning lines (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "level": level_name(record.levelno),
            "ts": _iso_ts(record.created),
            "caller": _caller(record),
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            # An event field never hides the four standard keys.
            out[key if key not in _RESERVED else f"field-{key}"] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class CapnslogFormatter(logging.Formatter):
    """capnslog's text line (``2026-11-21 02:05:25.123456 I | etcdserver: msg``), fields as
    ``key=value`` after the message; for ``--logger capnslog``."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        us = int((record.created - int(record.created)) * 1_000_000)
        pkg = record.name.rsplit(".", 1)[-1]
        line = (
            f"{time.strftime('%Y-%m-%d %H:%M:%S', t)}.{us:06d} "
            f"{_CAPNS_LETTERS[level_name(record.levelno)]} | {pkg}: {record.getMessage()}"
        )
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += " error=" + orjson.dumps(self.formatException(record.exc_info)).decode()
        return line.replace("\n", "\\n")


def _text_value(v: Any) -> str:
    if isinstance(v, str) and v and not any(c in v for c in ' "=\n'):
        return v
    return orjson.dumps(v, default=str).decode()


def event(logger: logging.Logger, level: int, msg: str, /, **fields: Any) -> None:
    """Log one event with its key fields: ``event(log, logging.INFO, "saved snapshot", index=5)``.
    Field names use etcd's dashes where they have them: pass them as ``**{"took": ...}``."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields}, stacklevel=2)


def _stream(target: str) -> logging.Handler:
    if target in ("default", "stderr"):
        return logging.StreamHandler(sys.stderr)
    if target == "stdout":
        return logging.StreamHandler(sys.stdout)
    return logging.FileHandler(target, encoding="utf-8")


def setup(level: str = "info", outputs: Iterable[str] = ("default",), json: bool = True) -> None:
    """Configure the root logger for the server: ``level`` is an etcd --log-level name,
    ``outputs`` etcd's --log-outputs (``default``/``stderr``, ``stdout`` or file paths).
    Raises OSError when a log file cannot be opened."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    formatter: logging.Formatter = JSONFormatter() if json else CapnslogFormatter()
    for target in dict.fromkeys(outputs):
        handler = _stream(target)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
