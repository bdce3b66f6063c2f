"""etcd 3.4's v2 auth: users, roles and permissions kept in the v2 store's ``/2`` namespace.

Layer: above ``v2store``, below ``server``.  ``AuthStore`` holds the state and its operations and talks
to the store only through an ``AuthBackend`` (propose-and-apply, local read); ``Auth`` adds the access
checks the API layer asks before serving a request.
"""

from .access import GUEST, REFUSED, Auth, Caller, parse_basic_auth, unauthorized
from .model import GUEST_ROLE, ROOT_ROLE, ROOT_USER, Permissions, Role, RWPermission, User
from .password import BcryptHasher, PasswordHasher
from .store import AuthBackend, AuthError, AuthStore

__all__ = [
    "GUEST",
    "GUEST_ROLE",
    "REFUSED",
    "ROOT_ROLE",
    "ROOT_USER",
    "Auth",
    "AuthBackend",
    "AuthError",
    "AuthStore",
    "BcryptHasher",
    "Caller",
    "PasswordHasher",
    "Permissions",
    "RWPermission",
    "Role",
    "User",
    "parse_basic_auth",
    "unauthorized",
]
