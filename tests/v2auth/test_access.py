"""Access checks and the verified-credentials cache (bcrypt counted through an injected hasher)."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest

from fastkv.v2auth import Auth, Permissions, Role, RWPermission, User, parse_basic_auth
from fastkv.v2store.errors import UNAUTHORIZED
from tests.v2auth.fakes import make_auth


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def setup_auth(cache_size: int = 4096) -> tuple[Auth, Any, Any]:
    auth, backend, hasher = make_auth(cache_size)
    s = auth.store
    run(s.create_user(User("root", "rootpw")))
    run(s.create_user(User("alice", "a")))
    run(s.create_role(Role("app", Permissions(RWPermission(["/app/*", "/exact"], ["/app/*"])))))
    run(s.update_user(User("alice", grant=["app"])))
    run(s.enable_auth())
    return auth, backend, hasher


def allowed(auth: Auth, authz: str | None, method: str, key: str, recursive: bool = False) -> bool:
    err = auth.check_keys(authz, None, method, key, recursive)
    if err is not None:
        assert (err.code, err.cause, err.index, err.status) == (
            UNAUTHORIZED,
            "Insufficient credentials",
            0,
            401,
        )
    return err is None


def test_everything_allowed_while_disabled_without_reading_credentials() -> None:
    auth, _, hasher = make_auth()
    assert auth.check_keys("Basic garbage", None, "PUT", "/x", True) is None
    assert run(auth.has_root_access(None, None))
    assert hasher.checks == 0


def test_parse_basic_auth() -> None:
    assert parse_basic_auth(basic("u", "p:q")) == ("u", "p:q")
    assert parse_basic_auth("basic " + base64.b64encode(b"u:").decode()) == ("u", "")
    assert parse_basic_auth("Bearer x") is None
    assert parse_basic_auth("Basic !!!") is None
    assert parse_basic_auth("Basic " + base64.b64encode(b"nocolon").decode()) is None


def test_key_rules() -> None:
    auth, _, _ = setup_auth()
    a = basic("alice", "a")
    assert allowed(auth, a, "PUT", "/app/x")
    assert allowed(auth, a, "GET", "/app/x")
    assert allowed(auth, a, "HEAD", "/exact")
    assert not allowed(auth, a, "PUT", "/exact")
    assert not allowed(auth, a, "DELETE", "/other")
    assert not allowed(auth, a, "GET", "/app")  # "/app/*" does not cover "/app"
    assert allowed(auth, a, "GET", "/app/", recursive=True)
    assert not allowed(auth, a, "GET", "/exact", recursive=True)  # recursive needs a "*" pattern
    assert not allowed(auth, basic("alice", "wrong"), "GET", "/app/x")
    assert not allowed(auth, basic("nobody", "x"), "GET", "/app/x")
    assert not allowed(auth, "Bearer token", "GET", "/app/x")
    root = basic("root", "rootpw")
    assert allowed(auth, root, "DELETE", "/", recursive=True)


def test_guest_role_governs_requests_without_credentials() -> None:
    auth, _, _ = setup_auth()
    assert allowed(auth, None, "PUT", "/anything")  # the default guest role: read+write /*
    # Guest uses the exact-key rule even for recursive requests (a user would need "/dir*").
    only_dir = Permissions(RWPermission(["/dir"]))
    run(auth.store.update_role(Role("guest", grant=only_dir, revoke=Permissions(RWPermission(["/*"])))))
    assert allowed(auth, None, "GET", "/dir", recursive=True)
    assert not allowed(auth, None, "GET", "/dir/sub")
    run(auth.store.update_role(Role("guest", grant=Permissions(RWPermission(["/*"])), revoke=only_dir)))
    run(auth.store.update_role(Role("guest", revoke=Permissions(RWPermission(None, ["/*"])))))
    assert not allowed(auth, None, "PUT", "/anything")
    assert allowed(auth, None, "GET", "/anything")
    run(auth.store.delete_role("guest"))
    assert not allowed(auth, None, "GET", "/anything")
    # A header that fails is never downgraded to guest.
    run(auth.store.create_role(Role("guest", Permissions(RWPermission(["/*"], ["/*"])))))
    assert not allowed(auth, "Basic !!!", "GET", "/anything")


def test_client_certificate_common_name_is_the_user_without_authorization() -> None:
    auth, _, hasher = setup_auth()
    run(auth.store.update_role(Role("guest", revoke=Permissions(RWPermission(["/*"], ["/*"])))))
    checks = hasher.checks
    assert auth.check_keys(None, "alice", "PUT", "/app/x", False) is None
    assert auth.check_keys(None, "alice", "PUT", "/other", False) is not None
    assert auth.check_keys(None, "stranger", "GET", "/app/x", False) is not None  # -> guest, who may not
    assert hasher.checks == checks  # no password, no bcrypt
    # An Authorization header wins over the certificate.
    assert auth.check_keys(basic("alice", "wrong"), "root", "GET", "/app/x", False) is not None
    assert run(auth.has_root_access(None, "root"))
    assert not run(auth.has_root_access(None, "alice"))
    assert not run(auth.has_root_access(None, None))


def test_root_access() -> None:
    auth, _, _ = setup_auth()
    assert run(auth.has_root_access(basic("root", "rootpw"), None))
    assert not run(auth.has_root_access(basic("root", "bad"), None))
    assert not run(auth.has_root_access(basic("alice", "a"), None))
    assert run(auth.has_write_root_access("GET", None, None))
    assert not run(auth.has_write_root_access("PUT", None, None))


def test_bcrypt_runs_once_per_credentials_while_the_record_is_unchanged() -> None:
    auth, _, hasher = setup_auth()
    a = basic("alice", "a")
    base = hasher.checks
    for _ in range(50):
        assert allowed(auth, a, "GET", "/app/x")
    assert hasher.checks == base + 1
    assert run(auth.authenticate_async(a)).user.user == "alice"
    assert hasher.checks == base + 1
    # Wrong passwords are never cached: each one costs a check and is refused.
    assert not allowed(auth, basic("alice", "bad"), "GET", "/app/x")
    assert not allowed(auth, basic("alice", "bad"), "GET", "/app/x")
    assert hasher.checks == base + 3
    # A role permission change needs no new check, and applies at once.
    run(auth.store.update_role(Role("app", revoke=Permissions(RWPermission(None, ["/app/*"])))))
    assert not allowed(auth, a, "PUT", "/app/x")
    assert allowed(auth, a, "GET", "/app/x")
    assert hasher.checks == base + 3


def test_cache_invalidated_by_password_change() -> None:
    auth, _, hasher = setup_auth()
    a = basic("alice", "a")
    assert allowed(auth, a, "GET", "/app/x")
    base = hasher.checks
    run(auth.store.update_user(User("alice", "new")))
    assert not allowed(auth, a, "GET", "/app/x")
    assert hasher.checks == base + 1
    assert allowed(auth, basic("alice", "new"), "GET", "/app/x")
    assert allowed(auth, basic("alice", "new"), "GET", "/app/x")
    assert hasher.checks == base + 2


def test_cache_invalidated_by_role_change_and_recreate() -> None:
    auth, _, hasher = setup_auth()
    a = basic("alice", "a")
    assert allowed(auth, a, "PUT", "/app/x")
    base = hasher.checks
    run(auth.store.update_user(User("alice", revoke=["app"])))
    assert not allowed(auth, a, "PUT", "/app/x")
    assert hasher.checks == base + 1  # the record changed: checked again
    run(auth.store.delete_user("alice"))
    assert not allowed(auth, a, "GET", "/app/x")
    run(auth.store.create_user(User("alice", "other", ["app"])))
    assert not allowed(auth, a, "GET", "/app/x")  # the old password is not remembered
    assert allowed(auth, basic("alice", "other"), "GET", "/app/x")


def test_cache_is_bounded() -> None:
    auth, _, hasher = setup_auth(cache_size=2)
    for i in range(5):
        run(auth.store.create_user(User(f"u{i}", "p", ["app"])))
    for i in range(5):
        assert allowed(auth, basic(f"u{i}", "p"), "GET", "/app/x")
    assert len(auth._verified) <= 2 and len(auth._users) <= 2
    before = hasher.checks
    assert allowed(auth, basic("u0", "p"), "GET", "/app/x")  # evicted: checked again
    assert hasher.checks == before + 1


def test_passwords_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth, _, _ = setup_auth()
    allowed(auth, basic("alice", "s3cret-one"), "GET", "/app/x")
    allowed(auth, basic("ghost", "s3cret-two"), "GET", "/app/x")
    run(auth.store.update_user(User("alice", "s3cret-three")))
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "s3cret" not in text and "rootpw" not in text
