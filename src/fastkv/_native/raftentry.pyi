from collections.abc import Iterator

class Entry:
    term: int
    index: int
    type: int
    data: bytes
    def __init__(self, term: int, index: int, type: int, data: bytes) -> None: ...
    def __iter__(self) -> Iterator[int | bytes]: ...
