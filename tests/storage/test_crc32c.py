"""CRC-32C against published vectors (RFC 3720 B.4, the classic check value) and the twin."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from fastkv._native.crc32c import crc32c, crc32c_software
from tests.twins import walcodec as twin

VECTORS = [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


def test_known_vectors() -> None:
    for data, want in VECTORS:
        assert crc32c(data) == want, data
        assert crc32c_software(data) == want, data
        assert twin.crc32c(data) == want, data


def test_chaining_equals_one_pass() -> None:
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283
    assert crc32c(b"", 0x1234) == 0x1234


def test_accepts_buffers() -> None:
    data = bytearray(b"123456789")
    assert crc32c(data) == crc32c(memoryview(data)) == 0xE3069283


def test_large_input_released_gil_path_agrees() -> None:
    data = os.urandom(3 * 65536 + 13)
    assert crc32c(data) == crc32c_software(data)
    assert crc32c(data[1000:], crc32c(data[:1000])) == crc32c(data)


@given(st.binary(max_size=300), st.integers(0, 2**32 - 1), st.integers(0, 7))
def test_engines_agree_with_the_twin(data: bytes, seed: int, skip: int) -> None:
    # Slicing by `skip` moves the start off 8-byte alignment, the engines' special case.
    view = memoryview(data)[min(skip, len(data)) :]
    want = twin.crc32c(view, seed)
    assert crc32c(view, seed) == want
    assert crc32c_software(view, seed) == want
