"""The auth state and its operations, kept where etcd 3.4 keeps them: the v2 store's ``/2`` namespace.

Layout (etcd's): ``/2/enabled`` (``true``/``false``), ``/2/users/<name>`` and ``/2/roles/<name>``, each a
JSON record (see model.py).  Every change is a v2 request proposed through Raft by the backend, so the
state replicates, survives restarts, snapshots and backups, and moves the store index exactly as on
etcd.  The writes per operation are etcd's:

- the first write of a process (any create, update or delete below) first makes sure the layout exists:
  ``PUT /2``, ``/2/users/``, ``/2/roles/`` (dir, prevExist=false) and ``PUT /2/enabled=false``
  (prevExist=false); on a fresh cluster that is 4 writes, afterwards 4 failed creates (Raft entries,
  no store index);
- create user / create role: one create (prevExist=false); update (password, grant, revoke): one
  update (prevExist=true); delete: one delete;
- enable: a create of the ``guest`` role if there is none, then one update of ``/2/enabled``; disable:
  one update.

Reads that decide a write (does the user exist, the record to merge into) are quorum reads (``QGET``)
like etcd's; the GET endpoints and the access checks read the member's applied state.

Role ``root`` is built in and never stored; user ``root`` always carries it.  Errors are ``AuthError``
with etcd's status and message; store errors that are not part of the auth answer (a timeout, a lost
leader) pass through as ``V2Error``.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import orjson

from fastkv.v2store import errors as E
from fastkv.v2store.errors import V2Error
from fastkv.v2store.event import Event
from fastkv.v2store.request import V2Request

from .model import (
    GUEST_ROLE,
    GUEST_ROLE_RECORD,
    ROOT_ROLE,
    ROOT_ROLE_RECORD,
    ROOT_USER,
    Permissions,
    Role,
    RWPermission,
    User,
    attach_root_role,
    go_marshal,
    load_role,
    load_user,
)
from .password import BcryptHasher, PasswordHasher

PREFIX = "/2"
ENABLED_PATH = "/2/enabled"
USERS_DIR = "/2/users"
ROLES_DIR = "/2/roles"


class AuthBackend(Protocol):
    """The auth state's only way to the store.

    ``do`` proposes the request through Raft, waits until it is applied and returns its event
    (``QGET`` included: a linearizable read through the log); store errors raise ``V2Error``.
    ``get`` reads the member's applied state (a ``GET``, never through Raft); ``V2Error`` 100 when the
    key does not exist.  ``peek`` is the per-request read of the access checks: ``(modifiedIndex, value)``
    of a file in the applied state, None when there is no such file; it must cost no more than a
    lookup (no event, no stats).  Paths are etcd's store paths (``/2/users/alice``).  ``version`` is a
    number that changes whenever anything ``peek`` could answer changes (access decisions made at one
    version are kept until it moves)."""

    async def do(self, req: V2Request) -> Event: ...

    def get(self, path: str) -> Event: ...

    def peek(self, path: str) -> tuple[int, str] | None: ...

    def version(self) -> int: ...


class AuthError(Exception):
    """An answer of the auth API: ``{"message": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _auth_error(status: int, text: str) -> AuthError:
    return AuthError(status, "auth: " + text)


def user_path(name: str) -> str:
    return f"{USERS_DIR}/{name}"


def role_path(name: str) -> str:
    return f"{ROLES_DIR}/{name}"


def _is_not_found(e: V2Error) -> bool:
    return e.code == E.KEY_NOT_FOUND


class AuthStore:
    """etcd's v2auth store over an ``AuthBackend``.

    ``hasher`` does the bcrypt work; hashing runs in the default executor so the event loop keeps
    serving while a password is hashed."""

    def __init__(self, backend: AuthBackend, hasher: PasswordHasher | None = None) -> None:
        self.backend = backend
        self.hasher: PasswordHasher = hasher if hasher is not None else BcryptHasher()
        # etcd's ensuredOnce: in memory, so a restarted member tries the layout creates again.
        self._ensured = False
        # The parsed value of /2/enabled and the modifiedIndex it was parsed at.
        self._enabled_index = -1
        self._enabled = False

    # ----- reads of the applied state --------------------------------------------------------------

    def read(self, path: str) -> Event | None:
        """The event of a local GET of ``path``, None when it does not exist."""
        try:
            return self.backend.get(path)
        except V2Error as e:
            if _is_not_found(e):
                return None
            raise

    def auth_enabled(self) -> bool:
        found = self.backend.peek(ENABLED_PATH)
        if found is None:
            return False
        index, value = found
        if index != self._enabled_index:
            try:
                self._enabled = orjson.loads(value) is True
            except orjson.JSONDecodeError:
                self._enabled = False
            self._enabled_index = index
        return self._enabled

    def _names(self, dir_path: str) -> list[str]:
        ev = self.read(dir_path)
        if ev is None or not ev.node.nodes:
            return []
        return sorted(n.key.rsplit("/", 1)[-1] for n in ev.node.nodes)

    def all_users(self) -> list[str]:
        return self._names(USERS_DIR)

    def all_roles(self) -> list[str]:
        return sorted([ROOT_ROLE, *self._names(ROLES_DIR)])

    @staticmethod
    def _user_from_event(name: str, ev: Event | None) -> User:
        if ev is None:
            raise _auth_error(404, f"User {name} does not exist.")
        user = load_user(ev.node.value or "")
        if user.user == ROOT_USER:
            attach_root_role(user)
        return user

    @staticmethod
    def _role_from_event(name: str, ev: Event | None) -> Role:
        if ev is None:
            raise _auth_error(404, f"Role {name} does not exist.")
        return load_role(ev.node.value or "")

    def get_user(self, name: str) -> User:
        return self._user_from_event(name, self.read(user_path(name)))

    def get_role(self, name: str) -> Role:
        if name == ROOT_ROLE:
            return _copy_role(ROOT_ROLE_RECORD)
        return self._role_from_event(name, self.read(role_path(name)))

    # ----- quorum reads ----------------------------------------------------------------------------

    async def _qget(self, path: str) -> Event | None:
        try:
            return await self.backend.do(V2Request("QGET", path))
        except V2Error as e:
            if _is_not_found(e):
                return None
            raise

    async def _quorum_user(self, name: str) -> User:
        return self._user_from_event(name, await self._qget(user_path(name)))

    async def _quorum_role(self, name: str) -> Role:
        if name == ROOT_ROLE:
            return _copy_role(ROOT_ROLE_RECORD)
        return self._role_from_event(name, await self._qget(role_path(name)))

    # ----- writes ----------------------------------------------------------------------------------

    async def _ensure_layout(self) -> None:
        if self._ensured:
            return
        for path in (PREFIX, USERS_DIR + "/", ROLES_DIR + "/"):
            try:
                await self.backend.do(V2Request("PUT", path, dir=True, prev_exist=False))
            except V2Error as e:
                if e.code != E.NODE_EXIST:
                    raise
        try:
            await self.backend.do(V2Request("PUT", ENABLED_PATH, value="false", prev_exist=False))
        except V2Error as e:
            if e.code != E.NODE_EXIST:
                raise
        self._ensured = True

    async def _put(self, path: str, value: str, prev_exist: bool) -> Event:
        await self._ensure_layout()
        return await self.backend.do(V2Request("PUT", path, value=value, prev_exist=prev_exist))

    async def _delete(self, path: str) -> Event:
        await self._ensure_layout()
        return await self.backend.do(V2Request("DELETE", path, prev_exist=True))

    async def _hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.hasher.hash, password)

    async def create_or_update_user(self, user: User) -> tuple[User, bool]:
        """A PUT without roles, grant or revoke: update the password if the user exists, else create."""
        try:
            await self._quorum_user(user.user)
        except AuthError:
            return await self.create_user(user), True
        return await self.update_user(user), False

    async def create_user(self, user: User) -> User:
        if user.user == ROOT_USER:
            attach_root_role(user)
        if not user.password:
            raise _auth_error(400, f"Cannot create user {user.user} with an empty password")
        user.password = await self._hash(user.password)
        try:
            await self._put(user_path(user.user), go_marshal(user.to_obj()).decode(), False)
        except V2Error as e:
            if e.code == E.NODE_EXIST:
                raise _auth_error(409, f"User {user.user} already exists.") from None
            raise
        return user

    async def update_user(self, user: User) -> User:
        old = await self._quorum_user(user.user)
        new = await self._merge_user(old, user)
        if new == old:
            raise _auth_error(400, "User not updated. Use grant/revoke/password to update the user.")
        await self._put(user_path(user.user), go_marshal(new.to_obj()).decode(), True)
        return new

    async def _merge_user(self, old: User, change: User) -> User:
        password = await self._hash(change.password) if change.password else old.password
        roles = set(old.roles or ())
        for g in change.grant or ():
            if g in roles:
                raise _auth_error(409, f"Granting duplicate role {g} for user {change.user}")
            roles.add(g)
        for r in change.revoke or ():
            if r not in roles:
                raise _auth_error(409, f"Revoking ungranted role {r} for user {change.user}")
            roles.discard(r)
        return User(old.user, password, sorted(roles))

    async def delete_user(self, name: str) -> None:
        if name == ROOT_USER and self.auth_enabled():
            raise _auth_error(403, "Cannot delete root user while auth is enabled.")
        try:
            await self._delete(user_path(name))
        except V2Error as e:
            if _is_not_found(e):
                raise _auth_error(404, f"User {name} does not exist") from None
            raise

    async def create_role(self, role: Role) -> None:
        if role.role == ROOT_ROLE:
            raise _auth_error(403, f"Cannot modify role {role.role}: is root role.")
        try:
            await self._put(role_path(role.role), go_marshal(role.to_obj()).decode(), False)
        except V2Error as e:
            if e.code == E.NODE_EXIST:
                raise _auth_error(409, f"Role {role.role} already exists.") from None
            raise

    async def update_role(self, role: Role) -> Role:
        if role.role == ROOT_ROLE:
            raise _auth_error(403, f"Cannot modify role {role.role}: is root role.")
        old = await self._quorum_role(role.role)
        kv = _grant(old.permissions.kv, role.grant)
        kv = _revoke(kv, role.revoke)
        new = Role(old.role, Permissions(kv))
        if new == old:
            raise _auth_error(400, "Role not updated. Use grant/revoke to update the role.")
        await self._put(role_path(role.role), go_marshal(new.to_obj()).decode(), True)
        return new

    async def delete_role(self, name: str) -> None:
        if name == ROOT_ROLE:
            raise _auth_error(403, f"Cannot modify role {name}: is root role.")
        try:
            await self._delete(role_path(name))
        except V2Error as e:
            if _is_not_found(e):
                raise _auth_error(404, f"Role {name} doesn't exist.") from None
            raise

    async def enable_auth(self) -> None:
        if self.auth_enabled():
            raise _auth_error(409, "already enabled")
        try:
            await self._quorum_user(ROOT_USER)
        except (AuthError, V2Error):
            raise _auth_error(409, "No root user available, please create one") from None
        try:
            await self._quorum_role(GUEST_ROLE)
        except (AuthError, V2Error):
            await self.create_role(_copy_role(GUEST_ROLE_RECORD))
        await self._put(ENABLED_PATH, "true", True)

    async def disable_auth(self) -> None:
        if not self.auth_enabled():
            raise _auth_error(409, "already disabled")
        await self._put(ENABLED_PATH, "false", True)


def _copy_role(role: Role) -> Role:
    kv = role.permissions.kv
    return Role(role.role, Permissions(RWPermission(list(kv.read or ()), list(kv.write or ()))))


def _grant(rw: RWPermission, grant: Permissions | None) -> RWPermission:
    if grant is None:
        return rw
    read = set(rw.read or ())
    for p in grant.kv.read or ():
        if p in read:
            raise _auth_error(409, f"Granting duplicate read permission {p}")
        read.add(p)
    write = set(rw.write or ())
    for p in grant.kv.write or ():
        if p in write:
            raise _auth_error(409, f"Granting duplicate write permission {p}")
        write.add(p)
    return RWPermission(sorted(read), sorted(write))


def _revoke(rw: RWPermission, revoke: Permissions | None) -> RWPermission:
    if revoke is None:
        return rw
    # Revoking a permission the role does not have is not an error (etcd only logs it).
    read = set(rw.read or ()) - set(revoke.kv.read or ())
    write = set(rw.write or ()) - set(revoke.kv.write or ())
    return RWPermission(sorted(read), sorted(write))
