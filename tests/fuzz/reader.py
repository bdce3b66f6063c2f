"""A deterministic reader of fuzz input: the fuzzer's bytes turned into the choices a target makes.

Every target takes one ``bytes`` argument, so the same function runs under atheris (coverage-guided), under
hypothesis and as a replay of the seed corpus.  Reading past the end gives zeros and empty strings, so any
input, even an empty one, is a valid program for a target.
"""

from __future__ import annotations


class Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uint(self, nbytes: int) -> int:
        """A little-endian unsigned integer of nbytes bytes."""
        v = 0
        for i in range(nbytes):
            v |= self.byte() << (8 * i)
        return v

    def below(self, n: int) -> int:
        """An integer in [0, n) (n <= 65536)."""
        return self.uint(2) % n if n > 1 else 0

    def bool(self) -> bool:
        return self.byte() & 1 == 1

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def chunk(self, limit: int = 255) -> bytes:
        """A length byte, then that many bytes (at most limit)."""
        return self.take(min(self.byte(), limit))

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    @property
    def left(self) -> int:
        return len(self.data) - self.pos
