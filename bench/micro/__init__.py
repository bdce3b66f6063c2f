"""pytest-benchmark micro benchmarks: each Cython hot path against its pure-Python twin (see bench/README.md)."""
