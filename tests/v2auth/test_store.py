"""AuthStore on a plain v2 Store: etcd's records, writes per operation and errors."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from fastkv.v2auth import AuthError, AuthStore, Permissions, Role, RWPermission, User
from fastkv.v2auth.model import decode_role, decode_user, go_marshal, prefix_match, simple_match
from fastkv.v2auth.password import BcryptHasher
from fastkv.v2store.errors import V2Error
from tests.v2auth.fakes import CountingHasher, StoreBackend, make_auth

LAYOUT = [("PUT", "/2"), ("PUT", "/2/users/"), ("PUT", "/2/roles/"), ("PUT", "/2/enabled")]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stored(backend: StoreBackend, path: str) -> Any:
    return orjson.loads(backend.get(path).node.value or "")


def auth_error(coro: Any) -> tuple[int, str]:
    with pytest.raises(AuthError) as info:
        run(coro)
    return info.value.status, info.value.message


def test_first_write_creates_etcds_layout_then_one_write_per_operation() -> None:
    auth, backend, _ = make_auth()
    store = auth.store
    out = run(store.create_user(User("root", "pw")))
    assert out.roles == ["root"]
    assert backend.writes() == [*LAYOUT, ("PUT", "/2/users/root")]
    assert backend.index == 5
    assert backend.get("/2/enabled").node.value == "false"
    assert backend.get("/2").node.dir and backend.get("/2/roles").node.dir
    record = stored(backend, "/2/users/root")
    assert list(record) == ["user", "password", "roles"]
    assert record["roles"] == ["root"] and record["password"].startswith("$2a$04$")
    run(store.create_user(User("alice", "a")))
    assert backend.index == 6
    assert stored(backend, "/2/users/alice")["roles"] is None
    run(store.create_role(Role("app", Permissions(RWPermission(["/app/*"], None)))))
    assert backend.index == 7
    assert (
        backend.get("/2/roles/app").node.value
        == '{"role":"app","permissions":{"kv":{"read":["/app/*"],"write":null}}}'
    )
    run(store.update_user(User("alice", grant=["app"])))
    assert backend.index == 8
    run(store.enable_auth())  # guest role + enabled
    assert backend.index == 10
    assert backend.writes()[-2:] == [("PUT", "/2/roles/guest"), ("PUT", "/2/enabled")]
    run(store.disable_auth())
    run(store.enable_auth())  # the guest role exists now
    assert backend.index == 12
    # A restarted member tries the layout again: four failed creates, no index.
    again = AuthStore(backend, CountingHasher())
    run(again.disable_auth())
    assert backend.index == 13
    assert backend.writes()[-5:] == [*LAYOUT, ("PUT", "/2/enabled")]


def test_quorum_reads_go_through_the_backend() -> None:
    auth, backend, _ = make_auth()
    run(auth.store.create_or_update_user(User("root", "pw")))
    assert ("QGET", "/2/users/root") in [(r.method, r.path) for r in backend.requests]


def test_enable_and_disable_errors() -> None:
    auth, backend, _ = make_auth()
    store = auth.store
    assert auth_error(store.enable_auth()) == (409, "auth: No root user available, please create one")
    assert auth_error(store.disable_auth()) == (409, "auth: already disabled")
    assert backend.index == 0
    run(store.create_user(User("root", "pw")))
    run(store.enable_auth())
    assert store.auth_enabled()
    assert auth_error(store.enable_auth()) == (409, "auth: already enabled")
    assert auth_error(store.delete_user("root")) == (
        403,
        "auth: Cannot delete root user while auth is enabled.",
    )
    run(store.disable_auth())
    run(store.delete_user("root"))
    assert store.all_users() == []


def test_user_errors() -> None:
    auth, backend, _ = make_auth()
    store = auth.store
    assert auth_error(store.create_user(User("bob"))) == (
        400,
        "auth: Cannot create user bob with an empty password",
    )
    run(store.create_user(User("bob", "p", ["app"])))
    before = backend.index
    assert auth_error(store.create_user(User("bob", "p", ["app"]))) == (409, "auth: User bob already exists.")
    assert auth_error(store.update_user(User("bob", grant=["app"]))) == (
        409,
        "auth: Granting duplicate role app for user bob",
    )
    assert auth_error(store.update_user(User("bob", revoke=["x"]))) == (
        409,
        "auth: Revoking ungranted role x for user bob",
    )
    assert auth_error(store.update_user(User("bob"))) == (
        400,
        "auth: User not updated. Use grant/revoke/password to update the user.",
    )
    assert auth_error(store.update_user(User("nob", grant=["x"]))) == (404, "auth: User nob does not exist.")
    assert auth_error(store.delete_user("nob")) == (404, "auth: User nob does not exist")
    with pytest.raises(AuthError, match=r"auth: User nob does not exist\.$"):
        store.get_user("nob")
    assert backend.index == before


def test_user_merge_keeps_etcds_null_versus_empty_distinction() -> None:
    auth, backend, _ = make_auth()
    store = auth.store
    run(store.create_user(User("zed", "p")))
    before = backend.index
    out, created = run(store.create_or_update_user(User("zed")))
    assert not created and out.roles == [] and backend.index == before + 1
    assert stored(backend, "/2/users/zed")["roles"] == []
    # Now [] == [] and there is nothing to write.
    assert auth_error(store.update_user(User("zed")))[0] == 400


def test_password_change_rehashes_and_roles_are_sorted_sets() -> None:
    auth, backend, hasher = make_auth()
    store = auth.store
    run(store.create_user(User("u", "one", ["b", "a"])))
    assert stored(backend, "/2/users/u")["roles"] == ["b", "a"]  # a create stores what was sent
    old_hash = stored(backend, "/2/users/u")["password"]
    out = run(store.update_user(User("u", "two", grant=["c"], revoke=["b"])))
    assert out.roles == ["a", "c"]
    new_hash = stored(backend, "/2/users/u")["password"]
    assert new_hash != old_hash and hasher.check("two", new_hash)


def test_role_operations_and_errors() -> None:
    auth, backend, _ = make_auth()
    store = auth.store
    root_msg = (403, "auth: Cannot modify role root: is root role.")
    assert auth_error(store.create_role(Role("root"))) == root_msg
    assert auth_error(store.update_role(Role("root", grant=Permissions(RWPermission(["/x"]))))) == root_msg
    assert auth_error(store.delete_role("root")) == root_msg
    assert store.all_roles() == ["root"]
    assert store.get_role("root").permissions.kv == RWPermission(["/*"], ["/*"])
    run(store.create_role(Role("ops")))
    assert auth_error(store.create_role(Role("ops"))) == (409, "auth: Role ops already exists.")
    grant = Permissions(RWPermission(["/ops/*"]))
    out = run(store.update_role(Role("ops", grant=grant)))
    assert out.permissions.kv == RWPermission(["/ops/*"], [])
    assert auth_error(store.update_role(Role("ops", grant=grant))) == (
        409,
        "auth: Granting duplicate read permission /ops/*",
    )
    w = Permissions(RWPermission(None, ["/w"]))
    run(store.update_role(Role("ops", grant=w)))
    assert auth_error(store.update_role(Role("ops", grant=w))) == (
        409,
        "auth: Granting duplicate write permission /w",
    )
    assert auth_error(store.update_role(Role("ops", revoke=Permissions(RWPermission(None, ["/nope"]))))) == (
        400,
        "auth: Role not updated. Use grant/revoke to update the role.",
    )
    out = run(store.update_role(Role("ops", revoke=w)))
    assert out.permissions.kv == RWPermission(["/ops/*"], [])
    assert auth_error(store.update_role(Role("nop", grant=grant))) == (404, "auth: Role nop does not exist.")
    assert auth_error(store.delete_role("nop")) == (404, "auth: Role nop doesn't exist.")
    assert store.all_roles() == ["ops", "root"]
    before = backend.index
    run(store.delete_role("ops"))
    assert backend.index == before + 1 and store.all_roles() == ["root"]


def test_store_errors_pass_through() -> None:
    class Failing(StoreBackend):
        async def do(self, req: Any) -> Any:
            if req.method == "PUT" and req.path.startswith("/2/users/"):
                raise V2Error(300, "timeout", 7)
            return await super().do(req)

    store = AuthStore(Failing(), CountingHasher())
    with pytest.raises(V2Error) as info:
        run(store.create_user(User("u", "p")))
    assert info.value.code == 300


@pytest.mark.parametrize(
    "pattern,key,simple,prefix",
    [
        ("/foo*", "/foobar", True, True),
        ("/foo*", "/foo", True, True),
        ("/foo/*", "/foo", False, False),
        ("/foo/*", "/foo/a/b", True, True),
        ("/foo", "/foo", True, False),
        ("/foo", "/foo/a", False, False),
        ("*", "/anything", True, True),
        ("/*", "/", True, True),
        ("", "/x", False, False),
    ],
)
def test_permission_patterns(pattern: str, key: str, simple: bool, prefix: bool) -> None:
    assert simple_match(pattern, key) is simple
    assert prefix_match(pattern, key) is prefix


def test_go_decoding_rules() -> None:
    u = decode_user(b'  {"User":"a","PASSWORD":"p","roles":null,"extra":1} trailing')
    assert u == User("a", "p", None)
    assert decode_user(b"null") == User()
    for bad in (b"", b"[]", b'{"user":1}', b'{"roles":[1]}', b'{"user":"a"', b"NaN"):
        with pytest.raises(ValueError):
            decode_user(bad)
    r = decode_role(b'{"role":"r","permissions":{"KV":{"read":[]}},"grant":null,"revoke":{}}')
    assert r == Role("r", Permissions(RWPermission([], None)), None, Permissions())
    assert go_marshal({"a": "<&>"}) == b'{"a":"\\u003c\\u0026\\u003e"}'


def test_bcrypt_hasher_round_trip_in_etcds_format() -> None:
    h = BcryptHasher(cost=4)
    hashed = h.hash("secret")
    assert hashed.startswith("$2a$04$")
    assert h.check("secret", hashed) and not h.check("other", hashed)
    assert not h.check("secret", "not a hash")
    # Go's bcrypt only looks at the first 72 bytes.
    long = "x" * 80
    assert h.check("x" * 72, h.hash(long))


def test_a_failed_delete_still_writes_the_layout_first() -> None:
    # etcd: DELETE /v2/auth/users/nobody on a fresh cluster answers 404 after 4 layout writes.
    auth, backend, _ = make_auth()
    assert auth_error(auth.store.delete_user("nobody")) == (404, "auth: User nobody does not exist")
    assert backend.writes() == [*LAYOUT, ("DELETE", "/2/users/nobody")]
    assert backend.index == 4
    # Reads and refused enables write nothing.
    auth2, backend2, _ = make_auth()
    assert auth_error(auth2.store.enable_auth())[0] == 409
    assert auth2.store.all_users() == [] and backend2.index == 0
