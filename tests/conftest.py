"""Session-wide settings for the test suite.

Every member a test starts preallocates its WAL segment and a spare one.  At etcd's 64 MiB that is
128 MiB of disk per member and, over the hundreds of members the suite starts, tens of GB; the
tests do not need segments that large (the ones about segment cuts set their own, smaller size),
so members started by tests use 4 MiB segments unless the environment says otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("FASTKV_WAL_SEGMENT_SIZE_BYTES", str(4 * 1024 * 1024))
