"""The request encoding's ttl and stamp (v2store/request.py): the relative ttl round-trips, older
entries decode, and stamping in place gives exactly what decoding, stamping and encoding gives."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fastkv.v2store.request import V2Request, expiration_for_ttl

T = 1_800_000_000_123_456_789

# Strings that look like the encoding's own tail, and bytes that are not UTF-8.
tricky = st.sampled_from(["", ",0,null]", ',[],5]"', "0,true", "a\udcffb", "]]", ",[],", '"', "\\"])
text = st.one_of(st.text(max_size=12), tricky, st.builds(str.__add__, tricky, tricky))
requests = st.builds(
    V2Request,
    st.sampled_from(["PUT", "POST", "DELETE", "SYNC"]),
    text.map(lambda s: "/" + s),
    id=st.integers(0, 1 << 63),
    value=text,
    dir=st.booleans(),
    prev_value=text,
    prev_index=st.integers(0, (1 << 64) - 1),
    prev_exist=st.sampled_from([None, True, False]),
    expiration=st.integers(-(1 << 63), (1 << 63) - 1),
    recursive=st.booleans(),
    sorted=st.booleans(),
    time=st.sampled_from([0, 0, 1, T]),
    refresh=st.sampled_from([None, True, False]),
    ttl=st.one_of(st.none(), st.integers(0, (1 << 64) - 1)),
)


def fields(r: V2Request) -> tuple:
    return tuple(getattr(r, k) for k in V2Request.__slots__)


@settings(max_examples=400, deadline=None)
@given(requests)
def test_stamping_in_place_equals_decode_stamp_encode(req: V2Request) -> None:
    data = req.encode()
    decoded = V2Request.decode(data)
    assert fields(decoded) == fields(V2Request.decode(data))
    assert (decoded.ttl, decoded.time, decoded.path, decoded.value) == (
        req.ttl,
        req.time,
        req.path,
        req.value,
    )
    assert V2Request.peek_time(data) == req.time
    out = V2Request.stamped(data, T + 7)
    if req.time:
        assert out is data
    else:
        expected = V2Request.decode(data)
        expected.time = T + 7
        assert fields(V2Request.decode(out)) == fields(expected)
        assert V2Request.peek_time(out) == T + 7
    assert V2Request.peek_id(out) == req.id


def test_older_entry_forms_still_decode() -> None:
    """What a WAL written before the ttl field holds: 13 elements, or 14 with escaped strings."""
    old = b'[9,"PUT","/k","v",false,"",0,null,1800000030000000000,false,false,0,null]'
    r = V2Request.decode(old)
    assert (r.id, r.path, r.expiration, r.ttl, r.time) == (9, "/k", 1_800_000_030_000_000_000, None, 0)
    assert V2Request.peek_time(old) == 0
    assert V2Request.decode(V2Request.stamped(old, T)).expiration == 1_800_000_030_000_000_000
    escaped = V2Request("PUT", "/k\udcff", value="v").encode()
    assert len(orjson.loads(escaped)) == 14
    assert V2Request.decode(escaped).path == "/k\udcff"
    sync = b'[3,"SYNC","","",false,"",0,null,0,false,false,1800000000000000000,null]'
    assert V2Request.peek_time(sync) == 1_800_000_000_000_000_000


def test_a_ttl_is_carried_relative() -> None:
    data = V2Request("PUT", "/k", value="v", ttl=30).encode()
    assert orjson.loads(data)[-2:] == [[], 30]
    assert V2Request.decode(data).ttl == 30
    assert V2Request.decode(V2Request("PUT", "/k", value="v", ttl=0).encode()).ttl == 0


def _go_expiration(now_ns: int, ttl_s: int) -> int:
    """Go's now.Add(time.Duration(ttl) * time.Second).UnixNano(), each step wrapped to an int64."""

    def wrap(v: int) -> int:
        v &= (1 << 64) - 1
        return v - (1 << 64) if v >= 1 << 63 else v

    return wrap(now_ns + wrap(wrap(ttl_s) * 1_000_000_000))


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.just(T)),
    st.one_of(st.integers(0, (1 << 64) - 1), st.integers(0, 1 << 40)),
)
def test_expiration_for_ttl_wraps_like_go(now_ns: int, ttl_s: int) -> None:
    assert expiration_for_ttl(now_ns, ttl_s) == _go_expiration(now_ns, ttl_s)
