"""``user``, ``role`` and ``auth``: etcdctl's v2 auth commands, with its flags, output and exit codes.

Every answer other than success is printed as the server's message on stderr (``auth: Role x does not
exist.``, ``Insufficient credentials``) and exits 1; arguments are checked in etcdctl's order before any
request.  Passwords are read from the argument (``user add name:password``) or prompted for like etcdctl
(the prompt on stdout, the input without echo on a terminal, a newline after it); they are sent to the
server only, never printed.

``credentials_headers(ctx)`` is the global ``--username/-u user[:password]`` (or ``ETCDCTL_USERNAME``):
the ``Authorization`` header every request of the invocation carries, the password prompted for
(``Password: ``) when there is no colon.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from fastkv.cli import flags as fl
from fastkv.client import ClientError
from fastkv.client.core import Call, Request, error_from
from fastkv.client.model import HTTPError

if TYPE_CHECKING:
    from fastkv.cli.main import Command, Context

_JSON = "application/json"
EXIT_BAD_ARGS = 1
# main.py's Exit, handed over by ``commands`` (this module does not import main: main imports it).
_exit_class: type[BaseException] = SystemExit


def read_password(prompt: str, stdin: TextIO, stdout: TextIO) -> str:
    """speakeasy.Ask as etcdctl uses it: prompt on stdout, one line of input, then a newline."""
    stdout.write(prompt)
    stdout.flush()
    line = _read_line_quietly(stdin)
    stdout.write("\n")
    return line.rstrip("\n").rstrip("\r")


def _read_line_quietly(stdin: TextIO) -> str:
    try:
        tty = stdin.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return stdin.readline()
    import termios

    fd = stdin.fileno()
    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSAFLUSH, new)
    try:
        return stdin.readline()
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, old)


def _split_user(arg: str, prompt: str, ctx: Context) -> tuple[str, str]:
    name, colon, password = arg.partition(":")
    if not colon:
        password = read_password(prompt, ctx.stdin, ctx.stdout)
    return name, password


def credentials_headers(ctx: Context) -> dict[str, str]:
    """The ``Authorization`` header for ``--username`` (or ``ETCDCTL_USERNAME``); empty without one."""
    arg = ctx.gflags.get("username") or ctx.env.get("ETCDCTL_USERNAME", "")
    if not arg:
        return {}
    name, password = _split_user(arg, "Password: ", ctx)
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": "Basic " + token}


# --- requests -------------------------------------------------------------------------------------


def _auth_target(kind: str, name: str = "") -> str:
    from urllib.parse import quote

    return f"/v2/auth/{kind}" + (f"/{quote(name, safe='')}" if name else "")


def _parser(ok: tuple[int, ...]) -> Callable[[int, Mapping[str, str], bytes], Any]:
    """The Go client's check for one call: another status is an error carrying the body's
    ``message`` (empty when the body has none, e.g. a 201 where only 200 was expected)."""

    def parse(status: int, headers: Mapping[str, str], body: bytes) -> Any:
        if status not in ok:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise error_from(status, body) from None
            message = doc.get("message", "") if isinstance(doc, dict) else ""
            raise HTTPError(status, str(message))
        return orjson.loads(body) if body.strip() else None

    return parse


class _Api:
    """The invocation's client (synced, carrying ``--username``), made when etcdctl makes it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client()

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def call(self, method: str, target: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        """One auth API request; any failure ends the command (exit 1) with the server's message."""
        try:
            return self.try_call(method, target, body, ok)
        except ClientError as err:
            return _die(self.ctx, _error_text(err))

    def try_call(self, method: str, target: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = Request(method, target, data, _JSON if data is not None else None)
        return self.client.execute(Call(req, _parser(ok)))


def _error_text(err: Exception) -> str:
    if isinstance(err, HTTPError):
        return err.message
    return str(err)


def _die(ctx: Context, text: str) -> Any:
    ctx.stderr.write(text + "\n")
    raise _exit_class(EXIT_BAD_ARGS)


def _one_name(ctx: Context, what: str) -> str:
    if len(ctx.args) != 1:
        _die(ctx, f"Please provide a {what}")
    return ctx.args[0]


def _no_args(ctx: Context) -> None:
    if ctx.args:
        _die(ctx, "No arguments accepted")


# --- user -----------------------------------------------------------------------------------------


def _user_list(ctx: Context) -> None:
    _no_args(ctx)
    with _Api(ctx) as api:
        doc = api.call("GET", _auth_target("users")) or {}
    for user in doc.get("users") or ():
        ctx.stdout.write(f"{user.get('user', '')}\n")


def _user_add(ctx: Context) -> None:
    arg = _one_name(ctx, "username")
    with _Api(ctx) as api:
        name, password = _split_user(arg, "New password: ", ctx)
        api.call("PUT", _auth_target("users", name), {"user": name, "password": password}, (200, 201))
    ctx.stdout.write(f"User {name} created\n")


def _user_get(ctx: Context) -> None:
    name = _one_name(ctx, "username")
    with _Api(ctx) as api:
        doc = api.call("GET", _auth_target("users", name)) or {}
    roles = [r.get("role", "") for r in doc.get("roles") or ()]
    ctx.stdout.write(f"User: {doc.get('user', '')}\n")
    # etcdctl joins a list that starts with one empty slot per role, hence the extra spaces.
    ctx.stdout.write("Roles: " + " ".join([""] * len(roles) + roles) + "\n")


def _user_remove(ctx: Context) -> None:
    name = _one_name(ctx, "username")
    with _Api(ctx) as api:
        api.call("DELETE", _auth_target("users", name))
    ctx.stdout.write(f"User {name} removed\n")


def _user_passwd(ctx: Context) -> None:
    name = _one_name(ctx, "username")
    with _Api(ctx) as api:
        # etcdctl 3.4 goes on whatever this answers: for a missing user the PUT below creates it and
        # the command fails on the unexpected 201 with an empty message.
        try:
            api.try_call("GET", _auth_target("users", name))
        except ClientError:
            pass
        password = read_password("New password: ", ctx.stdin, ctx.stdout)
        api.call("PUT", _auth_target("users", name), {"user": name, "password": password})
    ctx.stdout.write("Password updated\n")


def _user_grant_revoke(field: str) -> Callable[[Context], None]:
    def action(ctx: Context) -> None:
        roles: list[str] = ctx.flags["roles"]
        if not roles:
            _die(ctx, "No roles specified; please use `--roles`")
        name = _one_name(ctx, "username")
        with _Api(ctx) as api:
            api.call("GET", _auth_target("users", name))
            api.call("PUT", _auth_target("users", name), {"user": name, field: roles})
        ctx.stdout.write(f"User {name} updated\n")

    return action


# --- role -----------------------------------------------------------------------------------------


def _role_list(ctx: Context) -> None:
    _no_args(ctx)
    with _Api(ctx) as api:
        doc = api.call("GET", _auth_target("roles")) or {}
    for role in doc.get("roles") or ():
        ctx.stdout.write(f"{role.get('role', '')}\n")


def _role_add(ctx: Context) -> None:
    name = _one_name(ctx, "role name")
    with _Api(ctx) as api:
        try:
            api.try_call("GET", _auth_target("roles", name))
        except ClientError:
            pass
        else:
            _die(ctx, f"Role {name} already exists")
        api.call("PUT", _auth_target("roles", name), {"role": name}, (200, 201))
    ctx.stdout.write(f"Role {name} created\n")


def _role_get(ctx: Context) -> None:
    name = _one_name(ctx, "role name")
    with _Api(ctx) as api:
        doc = api.call("GET", _auth_target("roles", name)) or {}
    kv = (doc.get("permissions") or {}).get("kv") or {}
    out = [f"Role: {doc.get('role', '')}", "KV Read:"]
    out += [f"\t{p}" for p in kv.get("read") or ()]
    out.append("KV Write:")
    out += [f"\t{p}" for p in kv.get("write") or ()]
    ctx.stdout.write("\n".join(out) + "\n")


def _remove_role(ctx: Context) -> None:
    name = _one_name(ctx, "role name")
    with _Api(ctx) as api:
        api.call("DELETE", _auth_target("roles", name))
    ctx.stdout.write(f"Role {name} removed\n")


def canonical_url_path(p: str) -> str:
    """etcd's pathutil.CanonicalURLPath: rooted, cleaned, a trailing slash kept."""
    if not p:
        return "/"
    if p[0] != "/":
        p = "/" + p
    np = posixpath.normpath(p)
    if np.startswith("//"):
        np = "/" + np.lstrip("/")
    if p[-1] == "/" and np != "/":
        np += "/"
    return np


def _role_grant_revoke(field: str) -> Callable[[Context], None]:
    def action(ctx: Context) -> None:
        path: str = ctx.flags["path"]
        if not path:
            _die(ctx, "No path specified; please use `--path`")
        canonical = canonical_url_path(path)
        if canonical != path:
            _die(ctx, f"Not canonical path; please use `--path={canonical}`")
        chosen = [k for k in ("read", "write", "readwrite") if ctx.flags[k]]
        if len(chosen) != 1:
            _die(ctx, "Please specify exactly one of --read, --write or --readwrite")
        kv: dict[str, list[str]] = {}
        if chosen[0] in ("read", "readwrite"):
            kv["read"] = [path]
        if chosen[0] in ("write", "readwrite"):
            kv["write"] = [path]
        name = _one_name(ctx, "role name")
        with _Api(ctx) as api:
            current = api.call("GET", _auth_target("roles", name))
            updated = api.call("PUT", _auth_target("roles", name), {"role": name, field: {"kv": kv}})
        if _same_role(updated, current):
            ctx.stdout.write(
                "Role unchanged; already granted" if field == "grant" else "Role unchanged; already revoked"
            )
        ctx.stdout.write(f"Role {name} updated\n")

    return action


def _same_role(a: Any, b: Any) -> bool:
    def norm(doc: Any) -> tuple[Any, ...]:
        doc = doc or {}
        kv = (doc.get("permissions") or {}).get("kv") or {}
        return doc.get("role"), kv.get("read") or [], kv.get("write") or []

    return norm(a) == norm(b)


# --- auth -----------------------------------------------------------------------------------------


def _auth_switch(enable: bool) -> Callable[[Context], None]:
    def action(ctx: Context) -> None:
        _no_args(ctx)
        with _Api(ctx) as api:
            api.call("PUT" if enable else "DELETE", "/v2/auth/enable")
        ctx.stdout.write("Authentication Enabled\n" if enable else "Authentication Disabled\n")

    return action


def _perm_flags(verb: str, what: str) -> list[fl.Flag]:
    return [
        fl.Flag(("path",), "string", f"Path {verb} for the role to access"),
        fl.Flag(("read",), "bool", f"{what} read{'-only' if what == 'Grant' else ''} access"),
        fl.Flag(("write",), "bool", f"{what} write{'-only' if what == 'Grant' else ''} access"),
        fl.Flag(("readwrite", "rw"), "bool", f"{what} read-write access"),
    ]


_ROLES_FLAG = fl.Flag(("roles",), "strings", "List of roles to grant or revoke")


def commands(command: type[Command], exit_class: type[BaseException]) -> list[Command]:
    """The ``user``, ``role`` and ``auth`` commands, built with main.py's Command; failures raise
    ``exit_class(1)``."""
    global _exit_class
    _exit_class = exit_class
    Command = command  # noqa: N806
    return [
        Command(
            "user",
            "user add, grant and revoke subcommands",
            subcommands=[
                Command("add", "add a new user for the etcd cluster", "<user>", action=_user_add),
                Command("get", "get details for a user", "<user>", action=_user_get),
                Command("list", "list all current users", "<user>", action=_user_list),
                Command("remove", "remove a user for the etcd cluster", "<user>", action=_user_remove),
                Command(
                    "grant",
                    "grant roles to an etcd user",
                    "<user>",
                    [_ROLES_FLAG],
                    _user_grant_revoke("grant"),
                ),
                Command(
                    "revoke",
                    "revoke roles for an etcd user",
                    "<user>",
                    [_ROLES_FLAG],
                    _user_grant_revoke("revoke"),
                ),
                Command("passwd", "change password for a user", "<user>", action=_user_passwd),
            ],
        ),
        Command(
            "role",
            "role add, grant and revoke subcommands",
            subcommands=[
                Command("add", "add a new role for the etcd cluster", "<role> ", action=_role_add),
                Command("get", "get details for a role", "<role>", action=_role_get),
                Command("list", "list all roles", " ", action=_role_list),
                Command("remove", "remove a role from the etcd cluster", "<role>", action=_remove_role),
                Command(
                    "grant",
                    "grant path matches to an etcd role",
                    "<role>",
                    _perm_flags("granted", "Grant"),
                    _role_grant_revoke("grant"),
                ),
                Command(
                    "revoke",
                    "revoke path matches for an etcd role",
                    "<role>",
                    _perm_flags("revoked", "Revoke"),
                    _role_grant_revoke("revoke"),
                ),
            ],
        ),
        Command(
            "auth",
            "overall auth controls",
            subcommands=[
                Command("enable", "enable auth access controls", " ", action=_auth_switch(True)),
                Command("disable", "disable auth access controls", " ", action=_auth_switch(False)),
            ],
        ),
    ]
