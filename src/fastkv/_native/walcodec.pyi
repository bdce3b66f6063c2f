from collections.abc import Sequence
from typing import Any

_Buffer = bytes | bytearray | memoryview

HEADER_SIZE: int
ENTRY_FIXED_SIZE: int

ENTRY_RECORD: int
STATE_RECORD: int
CRC_RECORD: int
SNAPSHOT_RECORD: int
METADATA_RECORD: int

END: int
BAD_HEADER: int
SHORT: int
BAD_CRC: int
BAD_PAYLOAD: int
BAD_CHAIN: int
METADATA_MISMATCH: int
INDEX_GAP: int
BAD_PADDING: int
STATUS_NAMES: tuple[str, ...]

class Encoder:
    crc: int
    def __init__(self, crc: int = 0, capacity: int = 65536) -> None: ...
    def __len__(self) -> int: ...
    def add_entries(self, entries: list[Any]) -> None: ...
    def add_entry(self, entry: Sequence[Any]) -> None: ...
    def add_hard_state(self, hard_state: tuple[int, int, int]) -> None: ...
    def add_crc(self) -> None: ...
    def add_snapshot(self, term: int, index: int) -> None: ...
    def add_metadata(self, metadata: _Buffer) -> None: ...
    def getvalue(self) -> bytes: ...
    def clear(self) -> None: ...
    def write(self, fd: int, offset: int) -> None: ...

def datasync(fd: int) -> None: ...
def data_end(buf: _Buffer, start: int = 0) -> int: ...

class Decoder:
    entries: list[Any]
    first_index: int
    metadata: bytes | None
    hard_state: Any
    snapshot: tuple[int, int] | None
    last_index: int
    crc: int
    crc_known: bool
    record_end: int
    def __init__(self, entry_cls: type, state_cls: type, first_index: int = 1) -> None: ...
    def decode(self, buf: _Buffer, offset: int = 0) -> tuple[int, int]: ...
