"""Users, roles and permissions as etcd 3.4's v2 auth stores and answers them.

Records are kept in the v2 store as JSON written the way Go's ``encoding/json`` writes etcd's structs,
so a data dir, a snapshot or a backup holds the same bytes etcd would.  Go's decoding rules that
change answers are kept too:

- ``null`` and an absent list are ``None`` (written ``null``), an empty list is ``[]``; the two are
  different for etcd's "not updated" check (a ``reflect.DeepEqual``), so they stay different here;
- field names match case-insensitively, the last duplicate wins, unknown fields are ignored;
- only the first JSON value of a request body is read (trailing bytes are ignored), and a value of
  the wrong type for a field fails the whole decode.

Permission patterns (etcd's rule): a pattern ending in ``*`` grants every key starting with the part
before the ``*``; any other pattern grants exactly that key.  A recursive request needs a ``*``
pattern covering the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

ROOT_ROLE = "root"
GUEST_ROLE = "guest"
ROOT_USER = "root"


@dataclass
class RWPermission:
    read: list[str] | None = None
    write: list[str] | None = None

    def to_obj(self) -> dict[str, Any]:
        return {"read": self.read, "write": self.write}

    def is_empty(self) -> bool:
        return not self.read and not self.write

    def has_access(self, key: str, write: bool) -> bool:
        return any(simple_match(p, key) for p in (self.write if write else self.read) or ())

    def has_recursive_access(self, key: str, write: bool) -> bool:
        return any(prefix_match(p, key) for p in (self.write if write else self.read) or ())


@dataclass
class Permissions:
    kv: RWPermission = field(default_factory=RWPermission)

    def to_obj(self) -> dict[str, Any]:
        return {"kv": self.kv.to_obj()}


@dataclass
class Role:
    role: str = ""
    permissions: Permissions = field(default_factory=Permissions)
    grant: Permissions | None = None
    revoke: Permissions | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"role": self.role, "permissions": self.permissions.to_obj()}
        if self.grant is not None:
            obj["grant"] = self.grant.to_obj()
        if self.revoke is not None:
            obj["revoke"] = self.revoke.to_obj()
        return obj

    def has_key_access(self, key: str, write: bool) -> bool:
        return self.role == ROOT_ROLE or self.permissions.kv.has_access(key, write)

    def has_recursive_access(self, key: str, write: bool) -> bool:
        return self.role == ROOT_ROLE or self.permissions.kv.has_recursive_access(key, write)


@dataclass
class User:
    user: str = ""
    password: str = ""
    roles: list[str] | None = None
    grant: list[str] | None = None
    revoke: list[str] | None = None

    def to_obj(self) -> dict[str, Any]:
        """The stored form (``json.Marshal`` of etcd's User: empty password, grant, revoke omitted)."""
        obj: dict[str, Any] = {"user": self.user}
        if self.password:
            obj["password"] = self.password
        obj["roles"] = self.roles
        if self.grant:
            obj["grant"] = self.grant
        if self.revoke:
            obj["revoke"] = self.revoke
        return obj

    def public_obj(self) -> dict[str, Any]:
        """What the API answers for a PUT: the record without its password hash."""
        obj = self.to_obj()
        obj.pop("password", None)
        return obj


ROOT_ROLE_RECORD = Role(ROOT_ROLE, Permissions(RWPermission(["/*"], ["/*"])))
GUEST_ROLE_RECORD = Role(GUEST_ROLE, Permissions(RWPermission(["/*"], ["/*"])))


def simple_match(pattern: str, key: str) -> bool:
    if not pattern:
        return False
    if pattern[-1] == "*":
        return key.startswith(pattern[:-1])
    return key == pattern


def prefix_match(pattern: str, key: str) -> bool:
    return bool(pattern) and pattern[-1] == "*" and key.startswith(pattern[:-1])


def attach_root_role(user: User) -> User:
    if ROOT_ROLE not in (user.roles or ()):
        user.roles = [*(user.roles or ()), ROOT_ROLE]
    return user


# ----- encoding: Go's json.Marshal ---------------------------------------------------------------------


def go_marshal(obj: object) -> bytes:
    """``json.Marshal`` bytes: orjson's compact output with Go's HTML-safe escapes."""
    b = orjson.dumps(obj)
    if b"<" in b or b">" in b or b"&" in b or b"\xe2\x80\xa8" in b or b"\xe2\x80\xa9" in b:
        b = (
            b.replace(b"<", b"\\u003c")
            .replace(b">", b"\\u003e")
            .replace(b"&", b"\\u0026")
            .replace(b"\xe2\x80\xa8", b"\\u2028")
            .replace(b"\xe2\x80\xa9", b"\\u2029")
        )
    return b


# ----- decoding: Go's json.Decoder.Decode into etcd's structs --------------------------------------------


class DecodeError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"invalid JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def first_json_value(body: bytes) -> Any:
    """The first JSON value of ``body`` (what one ``Decoder.Decode`` call reads); DecodeError if none."""
    text = body.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except ValueError as e:
        raise DecodeError(str(e)) from None
    return value


def _fields(obj: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        lk = k.lower()
        if lk in names:
            out[lk] = v
    return out


def _string(v: Any, current: str = "") -> str:
    if v is None:
        return current
    if not isinstance(v, str):
        raise DecodeError("expected a string")
    return v


def _string_list(v: Any) -> list[str] | None:
    if v is None:
        return None
    if not isinstance(v, list):
        raise DecodeError("expected an array of strings")
    return [_string(x) for x in v]


def _object(v: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise DecodeError("expected an object")
    return v


def _rw_permission(v: Any, into: RWPermission | None = None) -> RWPermission:
    rw = into if into is not None else RWPermission()
    obj = _object(v)
    if obj is None:
        return rw
    f = _fields(obj, ("read", "write"))
    if "read" in f:
        rw.read = _string_list(f["read"])
    if "write" in f:
        rw.write = _string_list(f["write"])
    return rw


def _permissions(v: Any, into: Permissions | None = None) -> Permissions:
    p = into if into is not None else Permissions()
    obj = _object(v)
    if obj is None:
        return p
    f = _fields(obj, ("kv",))
    if "kv" in f:
        p.kv = _rw_permission(f["kv"], p.kv)
    return p


def user_from_value(value: Any) -> User:
    user = User()
    obj = _object(value)
    if obj is None:
        return user
    f = _fields(obj, ("user", "password", "roles", "grant", "revoke"))
    user.user = _string(f.get("user"), user.user)
    user.password = _string(f.get("password"), user.password)
    user.roles = _string_list(f.get("roles"))
    user.grant = _string_list(f.get("grant"))
    user.revoke = _string_list(f.get("revoke"))
    return user


def role_from_value(value: Any) -> Role:
    role = Role()
    obj = _object(value)
    if obj is None:
        return role
    f = _fields(obj, ("role", "permissions", "grant", "revoke"))
    role.role = _string(f.get("role"), role.role)
    if "permissions" in f:
        role.permissions = _permissions(f["permissions"], role.permissions)
    for name in ("grant", "revoke"):
        if name in f:
            setattr(role, name, None if f[name] is None else _permissions(f[name]))
    return role


def decode_user(body: bytes) -> User:
    return user_from_value(first_json_value(body))


def decode_role(body: bytes) -> Role:
    return role_from_value(first_json_value(body))


def load_user(value: str) -> User:
    """A stored user record (the value of ``/2/users/<name>``)."""
    return user_from_value(orjson.loads(value))


def load_role(value: str) -> Role:
    return role_from_value(orjson.loads(value))
