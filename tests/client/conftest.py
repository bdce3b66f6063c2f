"""The client tests use the same servers as the CLI tests: a real etcd as the oracle and the target."""

from tests.cli.conftest import oracle_url, target_url

__all__ = ["oracle_url", "target_url"]
