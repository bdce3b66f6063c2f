"""The fuzz targets by name: each is a function of one ``bytes`` that raises AssertionError (FuzzFailure)
when an invariant breaks, and lets any unexpected exception escape."""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.fuzz.form_target import form
from tests.fuzz.frame_target import frame
from tests.fuzz.http_target import http
from tests.fuzz.wal_target import wal

TARGETS: dict[str, Callable[[bytes], None]] = {"http": http, "form": form, "wal": wal, "frame": frame}

# The seeds of each target: tests/fuzz/corpus/<target>/, one input a file.
SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
