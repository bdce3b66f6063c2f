"""The one error a migration raises: the etcd data dir cannot be taken over, and why (one line)."""

from __future__ import annotations


class EtcdDataError(Exception):
    """The etcd data dir is corrupt, torn beyond what etcd repairs, or holds nothing fastkv can serve."""
