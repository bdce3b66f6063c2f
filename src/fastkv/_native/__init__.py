"""Compiled hot paths (built from native/*.pyx by setup.py)."""
