"""Password hashing: bcrypt at etcd's cost, in the ``$2a$`` form Go's x/crypto/bcrypt writes and reads.

bcrypt looks at the first 72 bytes of a password only; Go's package (as etcd 3.4 ships it) cuts longer
passwords silently, while the Python package refuses them, so they are cut here the same way.  A hash
costs tens of milliseconds by design: callers keep it off the event loop and cache what they verified.
"""

from __future__ import annotations

from typing import Protocol

import bcrypt

# golang.org/x/crypto/bcrypt.DefaultCost, what etcd uses.
DEFAULT_COST = 10
_MAX_PASSWORD_BYTES = 72


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def check(self, password: str, hashed: str) -> bool: ...


class BcryptHasher:
    def __init__(self, cost: int = DEFAULT_COST) -> None:
        self.cost = cost

    def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(rounds=self.cost, prefix=b"2a")
        return bcrypt.hashpw(password.encode()[:_MAX_PASSWORD_BYTES], salt).decode()

    def check(self, password: str, hashed: str) -> bool:
        try:
            return bcrypt.checkpw(password.encode()[:_MAX_PASSWORD_BYTES], hashed.encode())
        except ValueError:  # not a bcrypt hash (a hand-edited or foreign record)
            return False
