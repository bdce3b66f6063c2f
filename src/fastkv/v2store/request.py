"""The v2 request: what the API layer builds, what a Raft log entry carries, what the store applies.

Mirrors etcd's ``etcdserverpb.Request``, with one difference about time (docs/design.md, "Time"):
a client's ``ttl`` travels as ``ttl`` (seconds, relative) and is turned into an absolute expiration
only when the entry is applied, from the entry's cluster time, never from the wall clock of the
member that took the request.  ``time`` is the cluster time the leader stamped on the entry (unix
ns, 0 = unstamped; for SYNC the expiry cutoff).  ``expiration`` (absolute unix ns, 0 = none) is
still honoured for requests that carry no ``ttl``: entries written before stamps existed, data
migrated from etcd, tests.

Methods: ``GET`` (local read), ``QGET`` (quorum read through the log), ``PUT``, ``POST``,
``DELETE`` and ``SYNC`` (expire every key whose deadline is at or before ``time``).

Keys are byte strings, as in etcd: a key that is not valid UTF-8 is a ``str`` whose invalid bytes are
lone surrogates (Python's ``surrogateescape``: byte 0xFF is U+DCFF), so distinct byte strings stay
distinct keys.  JSON cannot carry lone surrogates, so ``encode`` writes such a string as the hex of its
``surrogatepass`` UTF-8 and lists the fields it escaped in a 14th element; ``decode`` undoes it exactly.
A request with a ``ttl`` is encoded with 15 elements: the 14th (the escaped fields, maybe none) and the
ttl.  Entries without a ttl keep the older 13/14-element form, so every older entry still decodes.
"""

from __future__ import annotations

import orjson

# Tri-state flags (etcd's *bool): None = absent.
OptBool = bool | None

_NS_PER_S = 1_000_000_000
_U64 = 1 << 64
_I64 = 1 << 63

# Positions of the string fields in the encoded array (path, value, prev_value).
_STR_FIELDS = (2, 3, 5)
_REFRESH_VALUES = (b"null", b"false", b"true")
_COMMA = ord(",")


def _wrap_int64(v: int) -> int:
    v &= _U64 - 1
    return v - _U64 if v >= _I64 else v


def expiration_for_ttl(now_ns: int, ttl_s: int) -> int:
    """The absolute expiry etcd 3.4 puts in a request for ``ttl`` seconds (a uint64) at ``now_ns``:
    ``now.Add(time.Duration(ttl) * time.Second).UnixNano()`` with Go's two's-complement wrapping, so a TTL
    too large for Go's time gives what etcd gives (a negative or pre-2000 expiry: permanent on create,
    already expired on update) instead of a far-future date."""
    d = ttl_s * _NS_PER_S
    if d < _I64:  # every ttl below 292 years: no wrapping in the duration
        v = now_ns + d
        if -_I64 <= v < _I64:
            return v
    return _wrap_int64(now_ns + _wrap_int64(_wrap_int64(ttl_s) * _NS_PER_S))


def _escape(s: str) -> str:
    return s.encode("utf-8", "surrogatepass").hex()


def _unescape(s: str) -> str:
    return bytes.fromhex(s).decode("utf-8", "surrogatepass")


class V2Request:
    __slots__ = (
        "id",
        "method",
        "path",
        "value",
        "dir",
        "prev_value",
        "prev_index",
        "prev_exist",
        "expiration",
        "wait",
        "since",
        "recursive",
        "sorted",
        "quorum",
        "time",
        "stream",
        "refresh",
        "no_value_on_success",
        "ttl",
    )

    def __init__(
        self,
        method: str,
        path: str,
        *,
        id: int = 0,
        value: str = "",
        dir: bool = False,
        prev_value: str = "",
        prev_index: int = 0,
        prev_exist: OptBool = None,
        expiration: int = 0,
        wait: bool = False,
        since: int = 0,
        recursive: bool = False,
        sorted: bool = False,
        quorum: bool = False,
        time: int = 0,
        stream: bool = False,
        refresh: OptBool = None,
        no_value_on_success: bool = False,
        ttl: int | None = None,
    ) -> None:
        self.id = id
        self.method = method
        self.path = path
        self.value = value
        self.dir = dir
        self.prev_value = prev_value
        self.prev_index = prev_index
        self.prev_exist = prev_exist
        # Absolute expiry in unix ns; 0 = no TTL.  (etcd uses the same "0 = permanent" rule.)
        self.expiration = expiration
        self.wait = wait
        self.since = since
        self.recursive = recursive
        self.sorted = sorted
        self.quorum = quorum
        self.time = time
        self.stream = stream
        self.refresh = refresh
        self.no_value_on_success = no_value_on_success
        # The client's ttl in seconds (a uint64), None = none given; applied as
        # expiration_for_ttl(the entry's cluster time, ttl), which takes the place of ``expiration``.
        self.ttl = ttl

    def encode(self) -> bytes:
        """Bytes for a Raft log entry.  Only the fields that affect apply are carried.

        Returned as a compact copy: the bytes orjson returns keep its whole output buffer (about
        4 KiB per result, measured with tracemalloc, for ~150 bytes of entry), and an entry lives in
        the in-memory Raft log until the next compaction.  Without the copy 100k PUTs held ~350 MB
        more, and every dumps touched fresh pages (2.5 us instead of 0.6 us per request)."""
        fields = (
            self.id,
            self.method,
            self.path,
            self.value,
            self.dir,
            self.prev_value,
            self.prev_index,
            self.prev_exist,
            self.expiration,
            self.recursive,
            self.sorted,
            self.time,
            self.refresh,
        )
        ttl = self.ttl
        try:
            if ttl is None:
                return memoryview(orjson.dumps(fields)).tobytes()
            return memoryview(orjson.dumps((*fields, (), ttl))).tobytes()
        except orjson.JSONEncodeError:
            return self._encode_escaped(list(fields), ttl)

    @staticmethod
    def _encode_escaped(fields: list, ttl: int | None) -> bytes:
        """A request holding lone surrogates (bytes that were not UTF-8)."""
        escaped = []
        for i in _STR_FIELDS:
            try:
                fields[i].encode("utf-8")
            except UnicodeEncodeError:
                fields[i] = _escape(fields[i])
                escaped.append(i)
        fields.append(escaped)
        if ttl is not None:
            fields.append(ttl)
        return orjson.dumps(fields)

    @staticmethod
    def peek_id(data: bytes) -> int:
        """The request id of an encoded request, without decoding the rest (it leads the array)."""
        return int(data[1 : data.index(b",")])

    @classmethod
    def decode(cls, data: bytes) -> V2Request:
        fields = orjson.loads(data)
        ttl = fields.pop() if len(fields) == 15 else None
        if len(fields) == 14:
            for i in fields.pop():
                fields[i] = _unescape(fields[i])
        (
            id_,
            method,
            path,
            value,
            dir_,
            prev_value,
            prev_index,
            prev_exist,
            expiration,
            recursive,
            sorted_,
            time,
            refresh,
        ) = fields
        return cls(
            method,
            path,
            id=id_,
            value=value,
            dir=dir_,
            prev_value=prev_value,
            prev_index=prev_index,
            prev_exist=prev_exist,
            expiration=expiration,
            recursive=recursive,
            sorted=sorted_,
            time=time,
            refresh=refresh,
            quorum=method == "QGET",
            ttl=ttl,
        )

    @staticmethod
    def _time_span(data: bytes) -> tuple[int, int] | None:
        """Where the ``time`` field's digits are in an encoded request whose strings needed no escaping
        (13 elements ``[..., time, refresh]``, or 15 ``[..., time, refresh, [], ttl]``); None otherwise.
        Found from the end: strings come earlier, and what follows ``time`` is never a string."""
        end = len(data) - 1  # the closing bracket
        if data[end] != 0x5D or data.endswith(b"]]"):
            return None
        i = data.rfind(b",[],")
        if i >= 0 and data[i + 4 : end].isdigit():
            end = i  # the 15-element form: refresh ends where the empty escape list begins
        for value in _REFRESH_VALUES:
            r = end - len(value)
            if data.startswith(value, r) and data[r - 1] == _COMMA:
                start = data.rfind(b",", 0, r - 1) + 1
                return (start, r - 1) if start > 0 and data[start : r - 1].isdigit() else None
        return None

    @classmethod
    def peek_time(cls, data: bytes) -> int:
        """The cluster time stamped on an encoded request (0: none), decoding only if it must."""
        span = cls._time_span(data)
        return int(data[span[0] : span[1]]) if span is not None else cls.decode(data).time

    @classmethod
    def stamped(cls, data: bytes, time_ns: int) -> bytes:
        """The encoded request ``data`` stamped with cluster time ``time_ns`` if it carries no stamp yet
        (what the leader does to a write a follower forwarded); ``data`` itself if it does.  The common
        forms are stamped in place, without decoding and encoding it (a quarter of the time)."""
        span = cls._time_span(data)
        if span is not None:
            start, stop = span
            if data[start:stop] != b"0":
                return data
            return b"%b%d%b" % (data[:start], time_ns, data[stop:])
        req = cls.decode(data)
        if req.time:
            return data
        req.time = time_ns
        return req.encode()

    def copy(self) -> V2Request:
        c = V2Request.__new__(V2Request)
        for name in self.__slots__:
            setattr(c, name, getattr(self, name))
        return c

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if getattr(self, k))
        return f"V2Request({fields})"
