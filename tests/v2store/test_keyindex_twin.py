"""The compiled key index against its pure-Python twin (tests/twins/keyindex.py), op for op."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import fastkv._native.keyindex as native
import tests.twins.keyindex as twin

names = st.sampled_from(["a", "b", "_h", "c", "é", "x<y", "00000000000000000001"])
paths = st.lists(names, min_size=1, max_size=4).map(lambda cs: "/" + "/".join(cs))
values = st.text(max_size=8)
NOW = 1_795_218_935_000_000_000

ops = st.one_of(
    st.tuples(st.just("dir"), paths, st.integers(1, 50)),
    st.tuples(
        st.just("file"), paths, values, st.integers(1, 50), st.sampled_from([0, NOW + 1, NOW + 1_500_000_000])
    ),
    st.tuples(st.just("find"), paths),
    st.tuples(st.just("unlink"), paths),
    st.tuples(st.just("view"), paths, st.booleans(), st.booleans()),
    st.tuples(st.just("compare"), paths, st.sampled_from(["", "v", "w"]), st.integers(0, 3)),
)


def run(mod, script):
    idx = mod.KeyIndex()
    out = []
    for op in script:
        try:
            if op[0] == "dir":
                out.append(idx.ensure_dir(op[1], op[2]).path)
            elif op[0] == "file":
                _, path, value, index, expire = op
                slash = path.rfind("/")
                parent = idx.ensure_dir(path[:slash] or "/", index)
                if path in parent.children:
                    out.append("exists")
                else:
                    parent.children[path] = mod.Node(path, value, False, index, expire)
                    out.append("added")
            elif op[0] == "find":
                n = idx.find(op[1])
                out.append((n.path, n.value, n.is_dir(), n.hidden, n.created_index, n.modified_index))
            elif op[0] == "unlink":
                n = idx.get(op[1])
                out.append(idx.unlink(n) if n is not None else None)
            elif op[0] == "view":
                n = idx.find(op[1])
                out.append(n.load(op[2], True, NOW).to_json())
                out.append(n.repr(op[3], True, NOW).to_json())
                out.append(mod.Event("get", n.load(op[2], True, NOW), n.repr(False, False, NOW), 3).to_json())
            elif op[0] == "compare":
                out.append(idx.find(op[1]).compare(op[2], op[3]))
        except mod.PathError as err:
            out.append(("err", err.code, err.cause))
    out.append([n.path for n in idx.subtree(idx.root)])
    out.append(idx.root.load(True, True, NOW).to_json())
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=30))
def test_same_results(script) -> None:
    assert run(native, script) == run(twin, script)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_encode_string(s: str) -> None:
    assert native.encode_string(s) == twin.encode_string(s)


@settings(max_examples=500, deadline=None)
@given(st.integers(-(2**62), 2**62))
def test_format_time(ns: int) -> None:
    if -62135596800 * 10**9 <= ns <= 253402300799 * 10**9:  # years 1..9999, what datetime can hold
        assert native.format_time(ns) == twin.format_time(ns)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="/.ab_", max_size=12))
def test_clean_path(p: str) -> None:
    assert native.clean_path(p) == twin.clean_path(p)


@given(st.integers(-(2**40), 2**40), st.integers(0, 2**40))
def test_ttl_of(expire: int, now: int) -> None:
    assert native.ttl_of(expire, now) == twin.ttl_of(expire, now)


def test_known_encodings() -> None:
    assert native.format_time(1795218935387774475) == "2026-11-20T23:55:35.387774475Z"
    assert native.format_time(1795218935331119750) == "2026-11-20T23:55:35.33111975Z"
    assert native.encode_string("a\u2028<") == b'"a\\u2028\\u003c"'
    # Invalid UTF-8 (replaced by the API, or a lone surrogate) is written as Go writes an invalid byte.
    assert native.encode_string("\udcff") == b'"\\ufffd"'
    assert native.encode_string("a\ufffd\ufffdb\uffef") == b'"a\\ufffd\\ufffdb\xef\xbf\xaf"'
    assert native.encode_string("\ufffc\ufffe\u4fbd") == '"\ufffc\ufffe\u4fbd"'.encode()
