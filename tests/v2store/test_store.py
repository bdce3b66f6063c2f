"""Store operations: bodies, indexes and errors as etcd 3.4 answers them (etcd-v2.md §1.3-§1.7, §2)."""

from __future__ import annotations

from fastkv.v2store.event import is_created
from fastkv.v2store.request import V2Request

from .conftest import NOW, Driver


def test_set_new_then_replace_changes_created_index(d: Driver) -> None:
    assert (
        d.put("/a", value="1")
        == b'{"action":"set","node":{"key":"/a","value":"1","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.put("/a", value="2") == (
        b'{"action":"set","node":{"key":"/a","value":"2","modifiedIndex":2,"createdIndex":2},'
        b'"prevNode":{"key":"/a","value":"1","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.store.index == 2


def test_set_without_value_stores_empty_string(d: Driver) -> None:
    assert (
        d.put("/e") == b'{"action":"set","node":{"key":"/e","value":"","modifiedIndex":1,"createdIndex":1}}\n'
    )


def test_is_created_for_201() -> None:
    d = Driver()
    e1 = d.store.apply(V2Request("PUT", "/a", value="1"), NOW)
    e2 = d.store.apply(V2Request("PUT", "/a", value="1"), NOW)
    e3 = d.store.apply(V2Request("POST", "/q"), NOW)
    assert (is_created(e1), is_created(e2), is_created(e3)) == (True, False, True)


def test_intermediate_dirs_get_the_write_index(d: Driver) -> None:
    d.put("/x", value="0")
    d.put("/a/b/c", value="v")
    assert d.get("/a") == (
        b'{"action":"get","node":{"key":"/a","dir":true,"nodes":[{"key":"/a/b","dir":true,'
        b'"modifiedIndex":2,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2}}\n'
    )


def test_root_listing_has_no_key_and_no_indexes(d: Driver) -> None:
    assert d.get("/") == b'{"action":"get","node":{"dir":true}}\n'
    d.put("/a", value="1")
    assert d.get("/") == (
        b'{"action":"get","node":{"dir":true,"nodes":[{"key":"/a","value":"1","modifiedIndex":1,"createdIndex":1}]}}\n'
    )
    assert d.get("") == d.get("/")


def test_get_recursive_and_sorted(d: Driver) -> None:
    d.put("/s/b", value="2")
    d.put("/s/a/y", value="y")
    d.put("/s/a/x", value="x")
    d.put("/s/c", value="3")
    body = d.get("/s", recursive=True, sorted=True)
    assert body == (
        b'{"action":"get","node":{"key":"/s","dir":true,"nodes":['
        b'{"key":"/s/a","dir":true,"nodes":['
        b'{"key":"/s/a/x","value":"x","modifiedIndex":3,"createdIndex":3},'
        b'{"key":"/s/a/y","value":"y","modifiedIndex":2,"createdIndex":2}],"modifiedIndex":2,"createdIndex":2},'
        b'{"key":"/s/b","value":"2","modifiedIndex":1,"createdIndex":1},'
        b'{"key":"/s/c","value":"3","modifiedIndex":4,"createdIndex":4}],"modifiedIndex":1,"createdIndex":1}}\n'
    )
    # Not recursive: child dirs without their nodes.
    assert b'"key":"/s/a","dir":true,"modifiedIndex"' in d.get("/s", sorted=True)


def test_get_file(d: Driver) -> None:
    d.put("/f", value="v")
    assert (
        d.get("/f")
        == b'{"action":"get","node":{"key":"/f","value":"v","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.store.get("/f", False, False, NOW).etcd_index == 1


def test_get_errors_and_causes(d: Driver) -> None:
    d.put("/message", value="m")
    assert d.get("/a/b/c") == b'{"errorCode":100,"message":"Key not found","cause":"/a","index":1}\n'
    assert (
        d.get("/message/child")
        == b'{"errorCode":104,"message":"Not a directory","cause":"/message","index":1}\n'
    )
    assert d.put("/message/child", value="x") == (
        b'{"errorCode":104,"message":"Not a directory","cause":"/message","index":1}\n'
    )


def test_hidden_keys_are_not_listed_but_readable(d: Driver) -> None:
    d.put("/h/_sub/x", value="1")
    d.put("/h/_k", value="2")
    d.put("/h/v", value="3")
    assert d.get("/h", recursive=True) == (
        b'{"action":"get","node":{"key":"/h","dir":true,"nodes":['
        b'{"key":"/h/v","value":"3","modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert (
        d.get("/h/_k")
        == b'{"action":"get","node":{"key":"/h/_k","value":"2","modifiedIndex":2,"createdIndex":2}}\n'
    )
    assert b'"key":"/h/_sub/x"' in d.get("/h/_sub", recursive=True)


def test_create_and_exists(d: Driver) -> None:
    assert d.put("/c", value="1", prev_exist=False) == (
        b'{"action":"create","node":{"key":"/c","value":"1","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.put("/c", value="2", prev_exist=False) == (
        b'{"errorCode":105,"message":"Key already exists","cause":"/c","index":1}\n'
    )
    assert d.put("/cd", dir=True, prev_exist=False) == (
        b'{"action":"create","node":{"key":"/cd","dir":true,"modifiedIndex":2,"createdIndex":2}}\n'
    )


def test_in_order_keys(d: Driver) -> None:
    for _ in range(8):
        d.put("/x", value="0")
    assert d.post("/queue", value="job") == (
        b'{"action":"create","node":{"key":"/queue/00000000000000000009","value":"job",'
        b'"modifiedIndex":9,"createdIndex":9}}\n'
    )
    assert d.post("/queue", dir=True) == (
        b'{"action":"create","node":{"key":"/queue/00000000000000000010","dir":true,'
        b'"modifiedIndex":10,"createdIndex":10}}\n'
    )
    assert d.post("/", value="r") == (
        b'{"action":"create","node":{"key":"/00000000000000000011","value":"r","modifiedIndex":11,"createdIndex":11}}\n'
    )
    assert (
        d.post("/x", value="1") == b'{"errorCode":104,"message":"Not a directory","cause":"/x","index":11}\n'
    )


def test_update(d: Driver) -> None:
    assert (
        d.put("/u", value="1", prev_exist=True)
        == b'{"errorCode":100,"message":"Key not found","cause":"/u","index":0}\n'
    )
    d.put("/u", value="1")
    assert d.put("/u", value="2", prev_exist=True) == (
        b'{"action":"update","node":{"key":"/u","value":"2","modifiedIndex":2,"createdIndex":1},'
        b'"prevNode":{"key":"/u","value":"1","modifiedIndex":1,"createdIndex":1}}\n'
    )
    # Update without a value blanks it.
    assert d.put("/u", prev_exist=True).startswith(b'{"action":"update","node":{"key":"/u","value":"",')


def test_update_ttl_then_remove_it(d: Driver) -> None:
    d.put("/t", value="v")
    assert d.put("/t", value="v", prev_exist=True, ttl=10) == (
        b'{"action":"update","node":{"key":"/t","value":"v","expiration":"2026-11-20T23:55:45Z","ttl":10,'
        b'"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/t","value":"v","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.store.has_ttl_keys()
    assert d.put("/t", value="v", prev_exist=True) == (
        b'{"action":"update","node":{"key":"/t","value":"v","modifiedIndex":3,"createdIndex":1},'
        b'"prevNode":{"key":"/t","value":"v","expiration":"2026-11-20T23:55:45Z","ttl":10,'
        b'"modifiedIndex":2,"createdIndex":1}}\n'
    )
    assert not d.store.has_ttl_keys()


def test_dir_ttl_update_reports_index_it_does_not_keep(d: Driver) -> None:
    d.put("/d", dir=True)
    assert d.put("/d", dir=True, prev_exist=True, ttl=100) == (
        b'{"action":"update","node":{"key":"/d","dir":true,"expiration":"2026-11-20T23:57:15Z","ttl":100,'
        b'"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d","dir":true,"modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.get("/d") == (
        b'{"action":"get","node":{"key":"/d","dir":true,"expiration":"2026-11-20T23:57:15Z","ttl":100,'
        b'"modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.put("/d", value="x", prev_exist=True, ttl=100) == (
        b'{"errorCode":102,"message":"Not a file","cause":"/d","index":2}\n'
    )


def test_dirs_are_not_files(d: Driver) -> None:
    d.put("/d", dir=True)
    assert d.put("/d", dir=True) == b'{"errorCode":102,"message":"Not a file","cause":"/d","index":1}\n'
    assert d.put("/d", value="x") == b'{"errorCode":102,"message":"Not a file","cause":"/d","index":1}\n'
    assert (
        d.put("/d", value="x", prev_index=1)
        == b'{"errorCode":102,"message":"Not a file","cause":"/d","index":1}\n'
    )
    assert (
        d.delete("/d", prev_value="x") == b'{"errorCode":102,"message":"Not a file","cause":"/d","index":1}\n'
    )


def test_root_is_read_only(d: Driver) -> None:
    err = b'{"errorCode":107,"message":"Root is read only","cause":"/","index":0}\n'
    assert d.put("/", value="1") == err
    assert d.put("/", value="1", prev_exist=True) == err
    assert d.put("/", value="1", prev_exist=False) == err
    assert d.put("/", value="1", prev_value="x") == err
    assert d.delete("/", recursive=True) == err
    assert (
        # etcd's root is its namespace dir "/1", trimmed from the cause: no cause field at all.
        d.delete("/", prev_value="x") == b'{"errorCode":102,"message":"Not a file","index":0}\n'
    )


def test_compare_and_swap(d: Driver) -> None:
    d.put("/k", value="one")
    for _ in range(6):
        d.put("/other", value="x")
    assert d.put("/k", value="2", prev_value="two") == (
        b'{"errorCode":101,"message":"Compare failed","cause":"[two != one]","index":7}\n'
    )
    assert d.put("/k", value="2", prev_index=2) == (
        b'{"errorCode":101,"message":"Compare failed","cause":"[2 != 1]","index":7}\n'
    )
    assert d.put("/k", value="2", prev_value="two", prev_index=7) == (
        b'{"errorCode":101,"message":"Compare failed","cause":"[two != one] [7 != 1]","index":7}\n'
    )
    assert d.put("/k", value="2", prev_value="one", prev_index=1) == (
        b'{"action":"compareAndSwap","node":{"key":"/k","value":"2","modifiedIndex":8,"createdIndex":1},'
        b'"prevNode":{"key":"/k","value":"one","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.put("/k", value="3", prev_exist=True, prev_value="2").startswith(b'{"action":"compareAndSwap"')
    assert d.put("/nope", value="3", prev_value="2") == (
        b'{"errorCode":100,"message":"Key not found","cause":"/nope","index":9}\n'
    )


def test_delete_rules(d: Driver) -> None:
    d.put("/f", value="v")
    d.put("/dir/a", value="1")
    d.put("/empty", dir=True)
    assert d.delete("/f", dir=True) == (
        b'{"action":"delete","node":{"key":"/f","modifiedIndex":4,"createdIndex":1},'
        b'"prevNode":{"key":"/f","value":"v","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.delete("/empty") == b'{"errorCode":102,"message":"Not a file","cause":"/empty","index":4}\n'
    assert (
        d.delete("/dir", dir=True)
        == b'{"errorCode":108,"message":"Directory not empty","cause":"/dir","index":4}\n'
    )
    assert d.delete("/empty", dir=True) == (
        b'{"action":"delete","node":{"key":"/empty","dir":true,"modifiedIndex":5,"createdIndex":3},'
        b'"prevNode":{"key":"/empty","dir":true,"modifiedIndex":3,"createdIndex":3}}\n'
    )
    assert d.delete("/dir", recursive=True) == (
        b'{"action":"delete","node":{"key":"/dir","dir":true,"modifiedIndex":6,"createdIndex":2},'
        b'"prevNode":{"key":"/dir","dir":true,"modifiedIndex":2,"createdIndex":2}}\n'
    )
    assert d.get("/dir/a") == b'{"errorCode":100,"message":"Key not found","cause":"/dir","index":6}\n'
    assert d.delete("/gone") == b'{"errorCode":100,"message":"Key not found","cause":"/gone","index":6}\n'


def test_compare_and_delete(d: Driver) -> None:
    d.put("/k", value="v")
    assert (
        d.delete("/k", prev_value="w")
        == b'{"errorCode":101,"message":"Compare failed","cause":"[w != v]","index":1}\n'
    )
    assert d.delete("/k", prev_index=1) == (
        b'{"action":"compareAndDelete","node":{"key":"/k","modifiedIndex":2,"createdIndex":1},'
        b'"prevNode":{"key":"/k","value":"v","modifiedIndex":1,"createdIndex":1}}\n'
    )


def test_paths_are_cleaned(d: Driver) -> None:
    d.put("a//b/./c/", value="1")
    assert d.get("/a/b/c").startswith(b'{"action":"get","node":{"key":"/a/b/c"')
    assert d.get("/a/x/../b/c") == d.get("/a/b/c")


def test_failed_ops_do_not_move_the_index(d: Driver) -> None:
    d.put("/a", value="1")
    d.put("/a", value="1", prev_exist=False)
    d.put("/a", value="1", prev_value="zzz")
    d.delete("/zz")
    assert d.store.index == 1


def test_go_escaping_in_bodies(d: Driver) -> None:
    body = d.put("/e", value='\x08\x0c\x01\x7f<>&\u2028\u2029"\\/é')
    # Bytes as etcd 3.4 wrote them (verified against etcd 3.4.23).
    assert body == (
        b'{"action":"set","node":{"key":"/e","value":"\\u0008\\u000c\\u0001\x7f\\u003c\\u003e\\u0026'
        b'\\u2028\\u2029\\"\\\\/\xc3\xa9","modifiedIndex":1,"createdIndex":1}}\n'
    )


def test_replaced_utf8_is_written_as_go_writes_invalid_bytes(d: Driver) -> None:
    # The API decodes invalid UTF-8 with U+FFFD; Go writes each invalid byte as \ufffd, in events and errors.
    assert d.put("/k\ufffd", value="\ufffdv") == (
        b'{"action":"set","node":{"key":"/k\\ufffd","value":"\\ufffdv","modifiedIndex":1,"createdIndex":1}}\n'
    )
    assert d.get("/n\ufffd<") == (
        b'{"errorCode":100,"message":"Key not found","cause":"/n\\ufffd\\u003c","index":1}\n'
    )
    assert d.put("/k\ufffd", value="w", prev_value="\ufffd&") == (
        b'{"errorCode":101,"message":"Compare failed","cause":"[\\ufffd\\u0026 != \\ufffdv]","index":1}\n'
    )


def test_stats(d: Driver) -> None:
    d.put("/a", value="1")
    d.put("/a", value="1", prev_exist=False)  # createFail
    d.put("/a/b", value="1", prev_exist=False)  # walk failure: createFail and setsFail (etcd quirk)
    d.put("/a", value="2", prev_value="1")
    d.put("/a", value="2", prev_value="1")
    d.put("/a", value="3", prev_exist=True)
    d.put("/zz", value="3", prev_exist=True)
    d.delete("/a", prev_index=99)  # refused, but counted as a success by etcd (stats artefact)
    d.delete("/a", prev_index=3)
    d.delete("/a")
    d.get("/")
    d.get("/nope")
    d.put("/t", value="t", ttl=0)
    d.sync()
    assert d.store.stats_json() == (
        b'{"getsSuccess":1,"getsFail":1,"setsSuccess":2,"setsFail":1,"deleteSuccess":0,"deleteFail":1,'
        b'"updateSuccess":1,"updateFail":1,"createSuccess":0,"createFail":2,"compareAndSwapSuccess":1,'
        b'"compareAndSwapFail":1,"compareAndDeleteSuccess":2,"compareAndDeleteFail":0,"expireCount":1,"watchers":0}'
    )


def test_never_crashes_on_odd_requests(d: Driver) -> None:
    odd = [
        V2Request("PUT", "/o", dir=True, value="ignored", prev_exist=False, refresh=True),
        V2Request("PUT", "/o", refresh=True, prev_index=1 << 70),
        V2Request("PUT", "/p", expiration=1 << 80),
        V2Request("PUT", "/p", expiration=-5, prev_exist=True),
        V2Request("DELETE", "/", dir=True),
        V2Request("POST", "/o", refresh=True, expiration=1),
        V2Request("QGET", "/", recursive=True, sorted=True),
        V2Request("BREW", "/coffee"),
    ]
    for r in odd:
        try:
            d.store.apply(r, NOW)
        except Exception as exc:  # only V2Error may escape
            from fastkv.v2store.errors import V2Error

            assert isinstance(exc, V2Error), (r, exc)
