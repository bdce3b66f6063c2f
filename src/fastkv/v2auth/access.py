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
(user, password) pair is remembered, keyed by the user name and a keyed BLAKE2 digest of the password
(never the password itself), together with the ``modifiedIndex`` of the user record it was checked
against: any change of the record (password, roles, delete and re-create) changes that index and the
entry no longer matches.  Parsed user and role records are cached the same way, by ``modifiedIndex``,
so a request costs a few local store reads and dictionary lookups.  Both caches are LRU-bounded.
Failed checks are never cached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
from collections import OrderedDict
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

_NOT_VERIFIED = object()


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


class _LRU:
    __slots__ = ("data", "limit")

    def __init__(self, limit: int) -> None:
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.limit = limit

    def get(self, key: Any) -> Any:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.limit:
            self.data.popitem(last=False)

    def __len__(self) -> int:
        return len(self.data)


class Caller:
    """The outcome of authentication: ``user`` (None for the guest), or ``refused``."""

    __slots__ = ("user", "refused")

    def __init__(self, user: User | None, refused: bool = False) -> None:
        self.user = user
        self.refused = refused


GUEST = Caller(None)
REFUSED = Caller(None, True)


class Auth:
    """The auth state (``store``) and the access checks the API layer asks before serving a request."""

    def __init__(self, store: AuthStore, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.store = store
        self._verified = _LRU(cache_size)  # (name, digest) -> modifiedIndex of the record verified
        self._users = _LRU(cache_size)  # name -> (modifiedIndex, User)
        self._roles = _LRU(cache_size)  # name -> (modifiedIndex, Role)
        self._digest_key = os.urandom(32)

    def enabled(self) -> bool:
        return self.store.auth_enabled()

    # ----- records, cached by modifiedIndex ---------------------------------------------------------

    def _user(self, name: str) -> tuple[int, User] | None:
        try:
            ev = self.store.read(user_path(name))
        except V2Error:
            return None
        if ev is None or ev.node.value is None:
            return None
        index = ev.node.modified_index
        cached = self._users.get(name)
        if cached is not None and cached[0] == index:
            return cached
        try:
            user = load_user(ev.node.value)
        except ValueError:
            return None
        if user.user == ROOT_USER:
            attach_root_role(user)
        entry = (index, user)
        self._users.put(name, entry)
        return entry

    def _role(self, name: str) -> Role | None:
        if name == ROOT_ROLE:
            return ROOT_ROLE_RECORD
        try:
            ev = self.store.read(role_path(name))
        except V2Error:
            return None
        if ev is None or ev.node.value is None:
            return None
        index = ev.node.modified_index
        cached = self._roles.get(name)
        if cached is not None and cached[0] == index:
            return cached[1]  # type: ignore[no-any-return]
        try:
            role = load_role(ev.node.value)
        except ValueError:
            return None
        self._roles.put(name, (index, role))
        return role

    # ----- authentication ---------------------------------------------------------------------------

    def _digest(self, name: str, password: str) -> bytes:
        h = hashlib.blake2b(key=self._digest_key, digest_size=32)
        h.update(name.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
        h.update(password.encode("utf-8", "surrogateescape"))
        return h.digest()

    def _lookup(self, authorization: str | None, cert_cn: str | None) -> Any:
        """A Caller, or (name, password, index, user) still to be verified with bcrypt."""
        if not authorization:
            if cert_cn:
                entry = self._user(cert_cn)
                if entry is not None:
                    return Caller(entry[1])
            return GUEST
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
        if self._verified.get((name, self._digest(name, password))) == index:
            return Caller(user)
        return (name, password, index, user)

    def _verified_caller(self, name: str, password: str, index: int, user: User, ok: bool) -> Caller:
        if not ok:
            log.warning("auth: incorrect password", extra={"fields": {"user": name}})
            return REFUSED
        self._verified.put((name, self._digest(name, password)), index)
        return Caller(user)

    def authenticate(self, authorization: str | None, cert_cn: str | None = None) -> Caller:
        """Who the request is from (runs bcrypt on the event loop's thread when not cached)."""
        found = self._lookup(authorization, cert_cn)
        if isinstance(found, Caller):
            return found
        name, password, index, user = found
        ok = self.store.hasher.check(password, user.password)
        return self._verified_caller(name, password, index, user, ok)

    async def authenticate_async(self, authorization: str | None, cert_cn: str | None = None) -> Caller:
        """``authenticate`` with an uncached bcrypt check run in the default executor."""
        found = self._lookup(authorization, cert_cn)
        if isinstance(found, Caller):
            return found
        name, password, index, user = found
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self.store.hasher.check, password, user.password)
        return self._verified_caller(name, password, index, user, ok)

    # ----- decisions --------------------------------------------------------------------------------

    def key_access_error(self, caller: Caller, method: str, key: str, recursive: bool) -> V2Error | None:
        """None when ``caller`` may do ``method`` on the keys API path ``key``, else the 110 error."""
        if caller.refused:
            return unauthorized()
        write = method != "GET" and method != "HEAD"
        if caller.user is None:
            guest = self._role(GUEST_ROLE)
            if guest is not None and guest.has_key_access(key, write):
                return None
            log.debug("auth: invalid access for unauthenticated user", extra={"fields": {"key": key}})
            return unauthorized()
        for name in caller.user.roles or ():
            role = self._role(name)
            if role is None:
                continue
            if role.has_recursive_access(key, write) if recursive else role.has_key_access(key, write):
                return None
        log.debug("auth: invalid access", extra={"fields": {"user": caller.user.user, "key": key}})
        return unauthorized()

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
