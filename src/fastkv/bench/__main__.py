"""``python -m fastkv.bench``: see fastkv.bench.cli."""

import sys

from fastkv.bench.cli import main

sys.exit(main())
