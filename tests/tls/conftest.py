from __future__ import annotations

from pathlib import Path

import pytest

from tests.tls.harness import PKI


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI.create(tmp_path / "pki")
