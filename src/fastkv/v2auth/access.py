"""Who is asking, and may they: etcd 3.4's v2 access rules, with verified credentials cached.

Authentication (only while auth is enabled):

- an ``Authorization`` header must be ``Basic <base64 user:password>``; anything else, an unknown user
  or a wrong password is refused (there is no fallback to guest once a header is sent);
- without the header, when the server runs with ``--client-cert-auth`` the caller passes the client
  certificate's common name: an existing user of that name is the caller, no password asked;
- otherwise the caller is the guest: keys requests are judged by the ``guest`` role (exact key rule,
  even for recursive requests, as etcd does), everything else is refused.

Keys requests: GET and HEAD need read access, every other method write access; a user passes if any of
its roles grants the key (``root`` grants everything); a recursive request needs a ``*`` pattern that
covers the key.  The other endpoints (``/v2/auth/*``, member changes) need a user holding ``root``.

Cost: etcd runs bcrypt (tens of ms) on every authenticated request.  Here a verified
``Authorization`` header is remembered under a salted SHA-256 digest of it (never the header or the
password itself; the salt is random per process), together with the user name and the ``modifiedIndex``
of the user record it was checked against: any change of that record (password, roles, delete and
re-create) changes the index and the entry no longer matches.  Parsed user records and roles (their
patterns prepared for ``str.startswith``) are cached the same way, by ``modifiedIndex``, and read
through the backend's ``peek``.  The caches are bounded (the oldest entry goes first).  Failed checks
are never cached.

``keys_access(caller)`` resolves what a caller may do (its roles' grants) into a ``KeysAccess`` stamped
with the backend's ``version()``, which changes with anything ``peek`` could answer differently: the
API keeps the last one per client connection together with the header it was made for, so a
keep-alive client's next request with the same header costs a string comparison and a prefix test.
That header lives as long as the connection that keeps sending it, and no longer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
from typing import Any

from fastkv.v2store import errors as E
from fastkv.v2store.errors import V2Error

from .model import (
    GUEST_ROLE,
    ROOT_ROLE,
    ROOT_ROLE_RECORD,
    ROOT_USER,
    Role,
    User,
    attach_root_role,
    load_role,
    load_user,
)
from .store import AuthStore, role_path, user_path

log = logging.getLogger("fastkv.v2auth")

INSUFFICIENT_CREDENTIALS = "Insufficient credentials"
DEFAULT_CACHE_SIZE = 4096


def parse_basic_auth(header: str) -> tuple[str, str] | None:
    """(user, password) of a ``Basic`` Authorization header, None when it is not one (Go's BasicAuth)."""
    if len(header) < 6 or header[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:], validate=True)
    except (binascii.Error, ValueError):
        return None
    text = raw.decode("utf-8", "surrogateescape")
    user, sep, password = text.partition(":")
    if not sep:
        return None
    return user, password


def unauthorized() -> V2Error:
    """The keys API's answer to a refused request: 401, error 110, index 0."""
    return V2Error(E.UNAUTHORIZED, INSUFFICIENT_CREDENTIALS, 0)


class _Bounded:
    """A dict with at most ``limit`` entries; the oldest insertion goes first (lookups stay plain dict
    lookups: this sits on every request)."""

    __slots__ = ("data", "limit")

    def __init__(self, limit: int) -> None:
        self.data: dict[Any, Any] = {}
        self.limit = max(1, limit)

    def get(self, key: Any) -> Any:
        return self.data.get(key)

    def put(self, key: Any, value: Any) -> None:
        data = self.data
        data.pop(key, None)
        while len(data) >= self.limit:
            del data[next(iter(data))]
        data[key] = value

    def __len__(self) -> int:
        return len(self.data)


class _Grants:
    """A role's permissions prepared for the per-request check: exact keys in sets, ``*`` patterns as
    prefix tuples for ``str.startswith``."""

    __slots__ = ("root", "read_exact", "read_prefixes", "write_exact", "write_prefixes")

    def __init__(self, role: Role) -> None:
        self.root = role.role == ROOT_ROLE
        kv = role.permissions.kv
        self.read_exact, self.read_prefixes = _split_patterns(kv.read)
        self.write_exact, self.write_prefixes = _split_patterns(kv.write)

    def allows(self, key: str, write: bool, recursive: bool) -> bool:
        if self.root:
            return True
        if write:
            exact, prefixes = self.write_exact, self.write_prefixes
        else:
            exact, prefixes = self.read_exact, self.read_prefixes
        # Recursive requests need a "*" pattern (etcd's prefixMatch); others take either kind.
        return key.startswith(prefixes) or (not recursive and key in exact)


def _split_patterns(patterns: list[str] | None) -> tuple[frozenset[str], tuple[str, ...]]:
    exact = frozenset(p for p in patterns or () if p and p[-1] != "*")
    prefixes = tuple(p[:-1] for p in patterns or () if p and p[-1] == "*")
    return exact, prefixes


class Caller:
    """The outcome of authentication: ``user`` (None for the guest), or ``refused``."""

    __slots__ = ("user", "refused")

    def __init__(self, user: User | None, refused: bool = False) -> None:
        self.user = user
        self.refused = refused


GUEST = Caller(None)
REFUSED = Caller(None, True)
_ROOT_GRANTS = _Grants(ROOT_ROLE_RECORD)


class KeysAccess:
    """What one caller may do on the keys API, resolved against the auth state at ``version``
    (the backend's ``version()``): valid until that changes."""

    __slots__ = ("version", "refused", "user", "grants", "exact_only")

    def __init__(
        self, version: int, refused: bool, user: str | None, grants: tuple[_Grants, ...], exact_only: bool
    ) -> None:
        self.version = version
        self.refused = refused
        self.user = user
        self.grants = grants
        # The guest is judged by the exact-key rule even for a recursive request, as etcd does.
        self.exact_only = exact_only

    def error(self, method: str, key: str, recursive: bool) -> V2Error | None:
        """None when the caller may do ``method`` on the keys API path ``key``, else the 110 error."""
        if self.refused:
            return unauthorized()
        write = method != "GET" and method != "HEAD"
        if self.exact_only:
            recursive = False
        for grants in self.grants:
            if grants.allows(key, write, recursive):
                return None
        if self.user is None:
            log.debug("auth: invalid access for unauthenticated user", extra={"fields": {"key": key}})
        else:
            log.debug("auth: invalid access", extra={"fields": {"user": self.user, "key": key}})
        return unauthorized()


class Auth:
    """The auth state (``store``) and the access checks the API layer asks before serving a request."""

    def __init__(self, store: AuthStore, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.store = store
        # salted SHA-256 of the Authorization header -> (name, modifiedIndex of the record it matched, Caller)
        self._verified = _Bounded(cache_size)
        self._users = _Bounded(cache_size)  # name -> (modifiedIndex, User)
        self._roles = _Bounded(cache_size)  # name -> (modifiedIndex, _Grants)
        self._salt = os.urandom(32)
        self._enabled_version = -1
        self._enabled = False

    def version(self) -> int:
        """The auth state's version: a resolved ``KeysAccess`` holds while this stays the same."""
        return self.store.backend.version()

    def enabled(self) -> bool:
        version = self.store.backend.version()
        if version != self._enabled_version:
            self._enabled = self.store.auth_enabled()
            self._enabled_version = version
        return self._enabled

    # ----- records, cached by modifiedIndex ---------------------------------------------------------

    def _user(self, name: str) -> tuple[int, User] | None:
        found = self.store.backend.peek(user_path(name))
        if found is None:
            return None
        index, value = found
        cached = self._users.get(name)
        if cached is not None and cached[0] == index:
            return cached  # type: ignore[no-any-return]
        try:
            user = load_user(value)
        except ValueError:
            return None
        if user.user == ROOT_USER:
            attach_root_role(user)
        entry = (index, user)
        self._users.put(name, entry)
        return entry

    def _grants(self, name: str) -> _Grants | None:
        if name == ROOT_ROLE:
            return _ROOT_GRANTS
        found = self.store.backend.peek(role_path(name))
        if found is None:
            return None
        index, value = found
        cached = self._roles.get(name)
        if cached is not None and cached[0] == index:
            return cached[1]  # type: ignore[no-any-return]
        try:
            grants = _Grants(load_role(value))
        except ValueError:
            return None
        self._roles.put(name, (index, grants))
        return grants

    # ----- authentication ---------------------------------------------------------------------------

    def _digest(self, authorization: str) -> bytes:
        return hashlib.sha256(self._salt + authorization.encode("utf-8", "surrogateescape")).digest()

    def _lookup(self, authorization: str | None, cert_cn: str | None) -> Any:
        """A Caller, or (digest, name, password, index, user) still to be verified with bcrypt."""
        if not authorization:
            if cert_cn:
                entry = self._user(cert_cn)
                if entry is not None:
                    return Caller(entry[1])
            return GUEST
        digest = self._digest(authorization)
        hit = self._verified.get(digest)
        if hit is not None:
            found = self.store.backend.peek(user_path(hit[0]))
            if found is not None and found[0] == hit[1]:
                return hit[2]
        creds = parse_basic_auth(authorization)
        if creds is None:
            log.debug("auth: malformed basic auth encoding")
            return REFUSED
        name, password = creds
        entry = self._user(name)
        if entry is None:
            log.debug("auth: no such user", extra={"fields": {"user": name}})
            return REFUSED
        index, user = entry
        return (digest, name, password, index, user)

    def _verified_caller(self, digest: bytes, name: str, index: int, user: User, ok: bool) -> Caller:
        if not ok:
            log.warning("auth: incorrect password", extra={"fields": {"user": name}})
            return REFUSED
        caller = Caller(user)
        self._verified.put(digest, (name, index, caller))
        return caller

    def authenticate(self, authorization: str | None, cert_cn: str | None = None) -> Caller:
        """Who the request is from (runs bcrypt on the event loop's thread when not cached)."""
        found = self._lookup(authorization, cert_cn)
        if isinstance(found, Caller):
            return found
        digest, name, password, index, user = found
        ok = self.store.hasher.check(password, user.password)
        return self._verified_caller(digest, name, index, user, ok)

    def caller_now(self, authorization: str | None, cert_cn: str | None = None) -> Caller | None:
        """The caller when that needs no password check (a cached verification, a certificate user,
        the guest, a refusal); None when bcrypt must run (``authenticate_async``)."""
        found = self._lookup(authorization, cert_cn)
        return found if isinstance(found, Caller) else None

    async def authenticate_async(self, authorization: str | None, cert_cn: str | None = None) -> Caller:
        """``authenticate`` with an uncached bcrypt check run in the default executor."""
        found = self._lookup(authorization, cert_cn)
        if isinstance(found, Caller):
            return found
        digest, name, password, index, user = found
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self.store.hasher.check, password, user.password)
        return self._verified_caller(digest, name, index, user, ok)

    # ----- decisions --------------------------------------------------------------------------------

    def keys_access(self, caller: Caller) -> KeysAccess:
        """``caller``'s grants, resolved against the current auth state."""
        version = self.store.backend.version()
        if caller.refused:
            return KeysAccess(version, True, None, (), False)
        if caller.user is None:
            guest = self._grants(GUEST_ROLE)
            return KeysAccess(version, False, None, (guest,) if guest is not None else (), True)
        grants = tuple(g for g in map(self._grants, caller.user.roles or ()) if g is not None)
        return KeysAccess(version, False, caller.user.user, grants, False)

    def key_access_error(self, caller: Caller, method: str, key: str, recursive: bool) -> V2Error | None:
        """None when ``caller`` may do ``method`` on the keys API path ``key``, else the 110 error."""
        return self.keys_access(caller).error(method, key, recursive)

    @staticmethod
    def is_root(caller: Caller) -> bool:
        return caller.user is not None and ROOT_ROLE in (caller.user.roles or ())

    def check_keys(
        self, authorization: str | None, cert_cn: str | None, method: str, key: str, recursive: bool
    ) -> V2Error | None:
        """The whole keys API check: nothing to do while auth is disabled."""
        if not self.enabled():
            return None
        return self.key_access_error(self.authenticate(authorization, cert_cn), method, key, recursive)

    async def check_keys_async(
        self, authorization: str | None, cert_cn: str | None, method: str, key: str, recursive: bool
    ) -> V2Error | None:
        if not self.enabled():
            return None
        caller = await self.authenticate_async(authorization, cert_cn)
        return self.key_access_error(caller, method, key, recursive)

    async def has_root_access(self, authorization: str | None, cert_cn: str | None) -> bool:
        """etcd's hasRootAccess: true while auth is disabled, else a user holding ``root``.

        Without an Authorization header only the certificate's user can be root (no guest)."""
        if not self.enabled():
            return True
        if not authorization and not cert_cn:
            return False
        caller = await self.authenticate_async(authorization, cert_cn)
        return self.is_root(caller)

    async def has_write_root_access(
        self, method: str, authorization: str | None, cert_cn: str | None
    ) -> bool:
        """etcd's hasWriteRootAccess (member changes, ``/v2/auth/enable``): GET and HEAD are free."""
        if method == "GET" or method == "HEAD":
            return True
        return await self.has_root_access(authorization, cert_cn)
