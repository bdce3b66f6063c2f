"""``fastkvctl``: etcdctl (ETCDCTL_API=2) compatible command line client.

Behaviour copied from etcdctl 3.4.23 (etcd-v2.md §5): the same commands, flags, help texts, outputs and
exit codes — 0 ok, 1 bad arguments and member-command failures, 2 no connection during the initial member
sync, 4 a key request failed (including connection failures with ``--no-sync``), 5 cluster-health found an
unhealthy member; 3 for an unknown command (urfave's "No help topic").

Every key command first builds the client (and syncs: ``GET /v2/members``, then uses the members' client
URLs, unless ``--no-sync``) and only then checks its own arguments, as etcdctl does.
"""

from __future__ import annotations

import datetime
import functools
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

import fastkv
from fastkv.cli import auth as auth_cli
from fastkv.cli import flags as fl
from fastkv.cli import migrate, mirror, tlsflags
from fastkv.cli.output import ls_lines, print_response_key
from fastkv.client import Client, ClientError, ClusterError, DeadlineExceeded, NoEndpointsError, Response
from fastkv.storage.backup import BackupError, backup

VERSION = "3.4.23"
APP_NAME = "fastkvctl"
DEFAULT_ENDPOINTS = "http://127.0.0.1:2379,http://127.0.0.1:4001"

EXIT_SUCCESS = 0
EXIT_BAD_ARGS = 1
EXIT_BAD_CONNECTION = 2
EXIT_UNKNOWN_COMMAND = 3
EXIT_SERVER_ERROR = 4
EXIT_CLUSTER_NOT_HEALTHY = 5


class Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


GLOBAL_FLAGS = [
    fl.Flag(("debug",), "bool", "output cURL commands which can be used to reproduce the request"),
    fl.Flag(("no-sync",), "bool", "don't synchronize cluster information before sending request"),
    fl.Flag(
        ("output", "o"),
        "string",
        "output response in the given format (simple, `extended` or `json`)",
        "simple",
        placeholder="simple",
    ),
    fl.Flag(
        ("discovery-srv", "D"), "string", "domain name to query for SRV records describing cluster endpoints"
    ),
    fl.Flag(("insecure-discovery",), "bool", "accept insecure SRV records describing cluster endpoints"),
    fl.Flag(("peers", "C"), "string", 'DEPRECATED - "--endpoints" should be used instead'),
    fl.Flag(("endpoint",), "string", 'DEPRECATED - "--endpoints" should be used instead'),
    fl.Flag(
        ("endpoints",),
        "string",
        f'a comma-delimited list of machine addresses in the cluster (default: "{DEFAULT_ENDPOINTS}")',
    ),
    fl.Flag(("cert-file",), "string", "identify HTTPS client using this SSL certificate file"),
    fl.Flag(("key-file",), "string", "identify HTTPS client using this SSL key file"),
    fl.Flag(("ca-file",), "string", "verify certificates of HTTPS-enabled servers using this CA bundle"),
    fl.Flag(
        ("username", "u"), "string", "provide username[:password] and prompt if password is not supplied."
    ),
    fl.Flag(("timeout",), "duration", "connection timeout per request", 2.0),
    fl.Flag(("total-timeout",), "duration", "timeout for the command execution (except watch)", 5.0),
    fl.Flag(("help", "h"), "bool", "show help"),
    fl.Flag(("version", "v"), "bool", "print the version"),
]

HELP_FLAG = fl.Flag(("help", "h"), "bool", "show help")
TTL = fl.Flag(("ttl",), "int", "key time-to-live in seconds", 0)


@dataclass
class Command:
    name: str
    usage: str
    args_usage: str = ""
    flags: list[fl.Flag] = field(default_factory=list)
    action: Callable[[Context], None] | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    subcommands: list[Command] = field(default_factory=list)


@dataclass
class Context:
    """One invocation: global flag values, the command's flag values and arguments, and the I/O."""

    gflags: dict[str, Any]
    flags: dict[str, Any]
    args: list[str]
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    env: dict[str, str]
    app_name: str = APP_NAME

    @property
    def output(self) -> str:
        return str(self.gflags["output"])

    def fail(self, code: int, err: object) -> NoReturn:
        """etcdctl's handleError: ``Error:  <err>`` and, for a cluster error, the per-endpoint detail."""
        self.stderr.write(f"Error:  {err}\n")
        if isinstance(err, ClusterError):
            self.stderr.write(err.detail() + "\n")
        raise Exit(code)

    def endpoints(self) -> list[str]:
        discovered = self._srv_endpoints()
        if discovered:
            return discovered
        raw = ""
        for source in (
            self.gflags["endpoints"],
            self.env.get("ETCDCTL_ENDPOINTS", ""),
            self.gflags["endpoint"],
            self.env.get("ETCDCTL_ENDPOINT", ""),
            self.gflags["peers"],
            self.env.get("ETCDCTL_PEERS", ""),
        ):
            if source:
                raw = source
                break
        raw = raw or DEFAULT_ENDPOINTS
        result = []
        for ep in raw.split(","):
            if "://" not in ep:
                first = ep.split("/", 1)[0]
                if ":" in first and not first[:1].isalpha():
                    self.stderr.write(f'parse "{ep}": first path segment in URL cannot contain colon\n')
                    raise Exit(EXIT_BAD_ARGS)
                ep = "http://" + ep
            result.append(ep)
        return result

    def _srv_endpoints(self) -> list[str]:
        """etcdctl's ``--discovery-srv/-D`` (or ``ETCDCTL_DISCOVERY_SRV``): the client SRV records
        of the domain, https ones only unless ``--insecure-discovery`` (or a non-empty
        ``ETCDCTL_INSECURE_DISCOVERY``); ``ETCDCTL_DISCOVERY_SRV_NAME`` is the service suffix.
        Nothing usable found: the endpoint flags apply.  ``FASTKV_DNS_SERVER`` picks the name server.
        """
        domain = self.gflags["discovery-srv"] or self.env.get("ETCDCTL_DISCOVERY_SRV", "")
        if not domain:
            return []
        from fastkv.server.srv import client_endpoints, without_final_dot

        insecure = (
            bool(self.gflags["insecure-discovery"]) or self.env.get("ETCDCTL_INSECURE_DISCOVERY", "") != ""
        )
        try:
            found = client_endpoints(
                domain,
                self.env.get("ETCDCTL_DISCOVERY_SRV_NAME", ""),
                insecure,
                warn=lambda line: self.stderr.write(line + "\n"),
                environ=dict(self.env),
            )
        except LookupError as e:
            self.stderr.write(f"{e}\n")
            raise Exit(EXIT_BAD_ARGS) from None
        return [without_final_dot(u) for u in found]

    def tls_context(self, exit_code: int = EXIT_BAD_ARGS, prefix: str = "") -> ssl.SSLContext | None:
        """The TLS context of --ca-file/--cert-file/--key-file (or ETCDCTL_*_FILE), None without them;
        an unusable file ends the command with etcdctl's message and ``exit_code``."""
        try:
            return tlsflags.context(tlsflags.TLSFiles.from_flags(self.gflags, self.env))
        except tlsflags.TLSFlagError as err:
            self.stderr.write(f"{prefix}{err}\n")
            raise Exit(exit_code) from None

    def client(self, sync: bool = True, tls_exit_code: int = EXIT_BAD_ARGS, tls_prefix: str = "") -> Client:
        debug = bool(self.gflags["debug"])

        def show_curl(line: str) -> None:
            self.stderr.write(f"cURL Command: {line}\n")

        endpoints = self.endpoints()
        ctx = self.tls_context(tls_exit_code, tls_prefix)
        client = Client(
            endpoints,
            timeout=self.gflags["timeout"] or None,
            on_request=show_curl if debug else None,
            ssl_context=ctx,
        )
        client.headers.update(auth_cli.credentials_headers(self))
        total_timeout = self.gflags["total-timeout"]
        if sync and not self.gflags["no-sync"]:
            client.deadline = time.monotonic() + total_timeout if total_timeout else None
            if debug:
                self.stderr.write(f"start to sync cluster using endpoints({','.join(client.endpoints)})\n")
            try:
                client.sync()
            except NoEndpointsError as err:
                self.stderr.write("etcd cluster has no published client endpoints.\n")
                self.stderr.write(
                    "Try '--no-sync' if you want to access non-published client endpoints"
                    f"({','.join(client.endpoints)}).\n"
                )
                self.fail(EXIT_SERVER_ERROR, err)
            except ClusterError as err:
                if err.connection_failure:
                    self.fail(EXIT_BAD_CONNECTION, err)
            except DeadlineExceeded as err:
                self.fail(EXIT_BAD_CONNECTION, err)
            except ClientError:
                pass  # like etcdctl: a sync that got an answer but no member list keeps the given endpoints
            if debug:
                self.stderr.write(f"got endpoints({','.join(client.endpoints)}) after sync\n")
        if debug:
            self.stderr.write(f"Cluster-Endpoints: {', '.join(client.endpoints)}\n")
        # Like etcdctl, the command gets a fresh --total-timeout of its own (watches clear it).
        client.deadline = time.monotonic() + total_timeout if total_timeout else None
        return client

    def key_arg(self) -> str:
        if not self.args:
            self.fail(EXIT_BAD_ARGS, "key required")
        return self.args[0]

    def value_arg(self, i: int) -> str:
        """The argument at ``i``, else all of stdin; empty is "value required"."""
        if i < len(self.args):
            return self.args[i]
        try:
            data = self.stdin.read()
        except OSError:
            data = ""
        if not data:
            self.fail(EXIT_BAD_ARGS, "value required")
        return data

    def ttl(self) -> int | None:
        ttl = int(self.flags.get("ttl", 0))
        return ttl if ttl > 0 else None

    def request(self, fn: Callable[[], Response]) -> Response:
        try:
            return fn()
        except ClientError as err:
            self.fail(EXIT_SERVER_ERROR, err)

    def print(self, resp: Response) -> None:
        print_response_key(resp, self.output, self.stdout, self.stderr)

    def print_unless_simple_dir(self, resp: Response) -> None:
        if not (resp.node is not None and resp.node.dir) or self.output != "simple":
            self.print(resp)


# --- key commands ---------------------------------------------------------------------------------


def _set(ctx: Context) -> None:
    client = ctx.client()
    key = ctx.key_arg()
    value = ctx.value_arg(1)
    prev_value = ctx.flags["swap-with-value"] or None
    prev_index = max(int(ctx.flags["swap-with-index"]), 0)
    ctx.print(ctx.request(lambda: client.set(key, value, ctx.ttl(), prev_value, prev_index)))


def _mk(ctx: Context) -> None:
    client = ctx.client()
    key = ctx.key_arg()
    value = ctx.value_arg(1)
    if ctx.flags["in-order"]:
        resp = ctx.request(lambda: client.create_in_order(key, value, ctx.ttl()))
    else:
        resp = ctx.request(lambda: client.create(key, value, ctx.ttl()))
    ctx.print(resp)


def _dir_command(prev_exist: bool | None) -> Callable[[Context], None]:
    def action(ctx: Context) -> None:
        client = ctx.client()
        key = ctx.key_arg()
        resp = ctx.request(lambda: client.set(key, ttl=ctx.ttl(), prev_exist=prev_exist, dir=True))
        if ctx.output != "simple":
            ctx.print(resp)

    return action


def _update(ctx: Context) -> None:
    client = ctx.client()
    key = ctx.key_arg()
    value = ctx.value_arg(1)
    ctx.print(ctx.request(lambda: client.update(key, value, ctx.ttl())))


def _rm(ctx: Context) -> None:
    client = ctx.client()
    key = ctx.key_arg()
    f = ctx.flags
    prev_value = f["with-value"] or None
    prev_index = max(int(f["with-index"]), 0)
    resp = ctx.request(lambda: client.delete(key, f["dir"], f["recursive"], prev_value, prev_index))
    ctx.print_unless_simple_dir(resp)


def _rmdir(ctx: Context) -> None:
    client = ctx.client()
    key = ctx.key_arg()
    ctx.print_unless_simple_dir(ctx.request(lambda: client.delete(key, dir=True)))


def _get(ctx: Context) -> None:
    client = ctx.client()
    key = ctx.key_arg()
    resp = ctx.request(lambda: client.get(key, sorted=ctx.flags["sort"], quorum=ctx.flags["quorum"]))
    if resp.node is not None and resp.node.dir:
        ctx.stderr.write(f"{resp.node.key}: is a directory\n")
        raise Exit(EXIT_BAD_ARGS)
    ctx.print(resp)


def _ls(ctx: Context) -> None:
    client = ctx.client()
    key = ctx.args[0] if ctx.args else "/"
    f = ctx.flags
    resp = ctx.request(lambda: client.get(key, f["recursive"], f["sort"], f["quorum"]))
    if ctx.output == "simple":
        for line in ls_lines(resp, bool(f["p"])):
            ctx.stdout.write(line + "\n")
    else:
        ctx.print(resp)


def _watch_events(ctx: Context, client: Client, key: str, recursive: bool) -> Iterator[Response]:
    """etcdctl's watcher: first waitIndex is after-index + 1 (0: the next event), then last index + 1."""
    after = int(ctx.flags["after-index"])
    index = after + 1 if after > 0 else 0
    client.deadline = None  # --total-timeout does not apply to watches
    while True:
        resp = ctx.request(functools.partial(client.watch, key, index, recursive))
        if resp.node is not None:
            index = resp.node.modified_index + 1
        yield resp


def _watch(ctx: Context) -> None:
    client = ctx.client()
    key = ctx.key_arg()
    recursive = bool(ctx.flags["recursive"])
    for resp in _watch_events(ctx, client, key, recursive):
        if resp.node is not None and resp.node.dir:
            continue
        if recursive:
            ctx.stdout.write(f"[{resp.action}] {resp.node.key if resp.node else ''}\n")
        ctx.print(resp)
        ctx.stdout.flush()
        if not ctx.flags["forever"]:
            return


def _exec_watch(ctx: Context) -> None:
    client = ctx.client()
    args = ctx.args
    if len(args) < 2:
        ctx.fail(EXIT_BAD_ARGS, "key and command to exec required")
    if "--" in args[1:]:
        key, argv = args[0], args[2:]
    else:
        # etcdctl's own rule: without "--" the key is taken to be the *last* argument.
        key, argv = args[-1], args[:-1]
    for resp in _watch_events(ctx, client, key, bool(ctx.flags["recursive"])):
        node = resp.node
        if node is None or node.dir:
            ctx.stderr.write(f"Ignored dir {node.key if node else ''} change\n")
            ctx.stderr.flush()
            continue
        env = dict(os.environ)
        env.update(
            ETCD_WATCH_ACTION=resp.action,
            ETCD_WATCH_MODIFIED_INDEX=str(node.modified_index),
            ETCD_WATCH_KEY=node.key,
            ETCD_WATCH_VALUE=node.value or "",
        )
        ctx.stdout.flush()
        try:
            subprocess.Popen(
                argv, env=env, stdout=sys.stdout, stderr=sys.stderr
            )  # runs on its own, as etcdctl
        except OSError as err:
            ctx.stderr.write(f"exec: {err}")
            raise Exit(EXIT_BAD_ARGS) from None


# --- member and cluster-health --------------------------------------------------------------------


def _member_call(ctx: Context, fn: Callable[[], Any], prefix: str = "") -> Any:
    try:
        return fn()
    except ClientError as err:
        ctx.stderr.write(f"{prefix}{err}\n")
        raise Exit(EXIT_BAD_ARGS) from None


def _member_list(ctx: Context) -> None:
    if ctx.args:
        ctx.stderr.write("No arguments accepted\n")
        raise Exit(EXIT_BAD_ARGS)
    client = ctx.client()
    members = _member_call(ctx, client.members)
    leader = _member_call(ctx, client.leader, "Failed to get leader:  ")
    for m in members:
        peers = ",".join(m.peer_urls)
        if not m.name:
            ctx.stdout.write(f"{m.id}[unstarted]: peerURLs={peers}\n")
        else:
            is_leader = "true" if m.id == leader.id else "false"
            ctx.stdout.write(
                f"{m.id}: name={m.name} peerURLs={peers} clientURLs={','.join(m.client_urls)} isLeader={is_leader}\n"
            )


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _member_add(ctx: Context) -> None:
    if len(ctx.args) != 2:
        ctx.stderr.write("Provide a name and a single member peerURL\n")
        raise Exit(EXIT_BAD_ARGS)
    client = ctx.client()
    name, url = ctx.args
    member = _member_call(ctx, lambda: client.member_add([url]))
    ctx.stdout.write(f"Added member named {name} with ID {member.id} to cluster\n")
    members = _member_call(ctx, client.members)
    conf = [f"{name if m.id == member.id else m.name}={u}" for m in members for u in m.peer_urls]
    ctx.stdout.write(
        f"\nETCD_NAME={_go_quote(name)}\nETCD_INITIAL_CLUSTER={_go_quote(','.join(conf))}\n"
        'ETCD_INITIAL_CLUSTER_STATE="existing"\n'
    )


def _member_remove(ctx: Context) -> None:
    if len(ctx.args) != 1:
        ctx.stderr.write("Provide a single member ID\n")
        raise Exit(EXIT_BAD_ARGS)
    member_id = ctx.args[0]
    client = ctx.client()
    members = _member_call(ctx, client.members, "Error while verifying ID against known members: ")
    found = False
    for m in members:
        found = found or m.id == member_id
        if m.name == member_id:
            ctx.stderr.write(
                f"Found a member named {m.name}; if this is correct, please use its ID, eg:\n"
                f"\tetcdctl member remove {m.id}\n"
                "For more details, read the documentation at "
                "https://github.com/etcd-io/etcd/blob/master/Documentation/runtime-configuration.md"
                "#remove-a-member\n\n"
            )
    if not found:
        ctx.stderr.write(f"Couldn't find a member in the cluster with an ID of {member_id}.\n")
        raise Exit(EXIT_BAD_ARGS)
    try:
        client.member_remove(member_id)
    except ClientError as err:
        ctx.stderr.write(f"Received an error trying to remove member {member_id}: {err}")
        raise Exit(EXIT_BAD_ARGS) from None
    ctx.stdout.write(f"Removed member {member_id} from cluster\n")


def _member_update(ctx: Context) -> None:
    if len(ctx.args) != 2:
        ctx.stderr.write(
            "Provide an ID and a list of comma separated peerURL (0xabcd http://example.com,http://example1.com)\n"
        )
        raise Exit(EXIT_BAD_ARGS)
    client = ctx.client()
    member_id, urls = ctx.args
    _member_call(ctx, lambda: client.member_update(member_id, urls.split(",")))
    ctx.stdout.write(f"Updated member with ID {member_id} in cluster\n")


def _cluster_health(ctx: Context) -> None:
    client = ctx.client(sync=False, tls_exit_code=EXIT_SERVER_ERROR, tls_prefix="Error:  ")
    tls = ctx.tls_context()
    try:
        members = client.members()
    except ClientError as err:
        ctx.stdout.write("cluster may be unhealthy: failed to list members\n")
        ctx.fail(EXIT_SERVER_ERROR, err)
    timeout = ctx.gflags["total-timeout"] or None
    while True:
        healthy = 0
        for m in members:
            if not m.client_urls:
                ctx.stdout.write(f"member {m.id} is unreachable: no available published client urls\n")
                continue
            checked = False
            for url in m.client_urls:
                try:
                    ok = Client([url], timeout=timeout, ssl_context=tls).health().healthy
                except ClusterError as err:
                    reason = err.errors[0] if err.errors else str(err)
                    ctx.stdout.write(
                        f'failed to check the health of member {m.id} on {url}: Get "{url}/health": {reason}\n'
                    )
                    continue
                checked = True
                if ok:
                    ctx.stdout.write(f"member {m.id} is healthy: got healthy result from {url}\n")
                    healthy += 1
                else:
                    ctx.stdout.write(f"member {m.id} is unhealthy: got unhealthy result from {url}\n")
                break
            if not checked:
                ctx.stdout.write(
                    f"member {m.id} is unreachable: [{' '.join(m.client_urls)}] are all unreachable\n"
                )
        if healthy == len(members):
            ctx.stdout.write("cluster is healthy\n")
        elif healthy == 0:
            ctx.stdout.write("cluster is unavailable\n")
        else:
            ctx.stdout.write("cluster is degraded\n")
        if not ctx.flags["forever"]:
            raise Exit(EXIT_SUCCESS if healthy == len(members) else EXIT_CLUSTER_NOT_HEALTHY)
        ctx.stdout.write("\nnext check after 10 second...\n\n")
        ctx.stdout.flush()
        time.sleep(10)


# --- backup -----------------------------------------------------------------------------------------


def _backup(ctx: Context) -> None:
    """Files only, no client: like etcdctl's, success prints nothing and a refusal is one log line on
    stderr (capnslog's ``<date> <time> I | <message>``) with exit 1."""
    try:
        backup(
            ctx.flags["data-dir"],
            ctx.flags["backup-dir"],
            wal_dir=ctx.flags["wal-dir"] or None,
            backup_wal_dir=ctx.flags["backup-wal-dir"] or None,
        )
    except BackupError as err:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
        ctx.stderr.write(f"{stamp} I | {err}\n")
        raise Exit(EXIT_BAD_ARGS) from None


SET_DESCRIPTION = """Set sets the value of a key.

   When <value> begins with '-', <value> is interpreted as a flag.
   Insert '--' for workaround:

   $ set -- <key> <value>"""

COMMANDS = [
    Command(
        "backup",
        "backup an etcd directory",
        " ",
        [
            fl.Flag(("data-dir",), "string", "Path to the etcd data dir"),
            fl.Flag(("wal-dir",), "string", "Path to the etcd wal dir"),
            fl.Flag(("backup-dir",), "string", "Path to the backup dir"),
            fl.Flag(("backup-wal-dir",), "string", "Path to the backup wal dir"),
            # fastkv keeps no v3 data: there is nothing more to copy with it.
            fl.Flag(("with-v3",), "bool", "Backup v3 backend data"),
        ],
        _backup,
    ),
    Command(
        "cluster-health",
        "check the health of the etcd cluster",
        " ",
        [fl.Flag(("forever", "f"), "bool", "forever check the health every 10 second until CTRL+C")],
        _cluster_health,
    ),
    Command(
        "mk",
        "make a new key with a given value",
        "<key> <value>",
        [fl.Flag(("in-order",), "bool", "create in-order key under directory <key>"), TTL],
        _mk,
    ),
    Command("mkdir", "make a new directory", "<key>", [TTL], _dir_command(False)),
    Command(
        "rm",
        "remove a key or a directory",
        "<key>",
        [
            fl.Flag(("dir",), "bool", "removes the key if it is an empty directory or a key-value pair"),
            fl.Flag(("recursive", "r"), "bool", "removes the key and all child keys(if it is a directory)"),
            fl.Flag(("with-value",), "string", "previous value"),
            fl.Flag(("with-index",), "int", "previous index", 0),
        ],
        _rm,
    ),
    Command("rmdir", "removes the key if it is an empty directory or a key-value pair", "<key>", [], _rmdir),
    Command(
        "get",
        "retrieve the value of a key",
        "<key>",
        [
            fl.Flag(("sort",), "bool", "returns result in sorted order"),
            fl.Flag(("quorum", "q"), "bool", "require quorum for get request"),
        ],
        _get,
    ),
    Command(
        "ls",
        "retrieve a directory",
        "[key]",
        [
            fl.Flag(("sort",), "bool", "returns result in sorted order"),
            fl.Flag(("recursive", "r"), "bool", "returns all key names recursively for the given path"),
            fl.Flag(("p",), "bool", "append slash (/) to directories"),
            fl.Flag(("quorum", "q"), "bool", "require quorum for get request"),
        ],
        _ls,
    ),
    Command(
        "set",
        "set the value of a key",
        "<key> <value>",
        [
            TTL,
            fl.Flag(("swap-with-value",), "string", "previous value"),
            fl.Flag(("swap-with-index",), "int", "previous index", 0),
        ],
        _set,
        SET_DESCRIPTION,
    ),
    Command(
        "setdir",
        "create a new directory or update an existing directory TTL",
        "<key>",
        [TTL],
        _dir_command(None),
    ),
    Command("update", "update an existing key with a given value", "<key> <value>", [TTL], _update),
    Command("updatedir", "update an existing directory", "<key> <value>", [TTL], _dir_command(True)),
    Command(
        "watch",
        "watch a key for changes",
        "<key>",
        [
            fl.Flag(("forever", "f"), "bool", "forever watch a key until CTRL+C"),
            fl.Flag(("after-index",), "int", "watch after the given index", 0),
            fl.Flag(("recursive", "r"), "bool", "returns all values for key and child keys"),
        ],
        _watch,
    ),
    Command(
        "exec-watch",
        "watch a key for changes and exec an executable",
        "<key> <command> [args...]",
        [
            fl.Flag(("after-index",), "int", "watch after the given index", 0),
            fl.Flag(("recursive", "r"), "bool", "watch all values for key and child keys"),
        ],
        _exec_watch,
    ),
    Command(
        "member",
        "member add, remove and list subcommands",
        subcommands=[
            Command("list", "enumerate existing cluster members", " ", action=_member_list),
            Command("add", "add a new member to the etcd cluster", "<name> <peerURL>", action=_member_add),
            Command(
                "remove",
                "remove an existing member from the etcd cluster",
                "<memberID>",
                action=_member_remove,
            ),
            Command(
                "update",
                "update an existing member in the etcd cluster",
                "<memberID> <peerURLs>",
                action=_member_update,
            ),
        ],
    ),
]

COMMANDS += auth_cli.commands(Command, Exit)


# fastkv's own commands: left out of the help, which is etcdctl's word for word.
EXTRA_COMMANDS = [
    Command("migrate", "take over a stopped etcd member's data dir", " ", migrate.FLAGS, migrate.action),
    Command("mirror", "copy and follow a running etcd into this cluster", " ", mirror.FLAGS, mirror.action),
]


# --- help texts (urfave/cli v1 templates) ---------------------------------------------------------


def _table(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(a) for a, _ in rows) + 2
    return [a.ljust(width) + b for a, b in rows]


def app_help(name: str) -> str:
    commands = [(c.name, c.usage) for c in COMMANDS] + [
        ("help, h", "Shows a list of commands or help for one command")
    ]
    lines = [
        "NAME:",
        f"   {name} - A simple command line client for etcd.",
        "",
        "USAGE:",
        f"   {name} [global options] command [command options] [arguments...]",
        "",
        "VERSION:",
        f"   {VERSION}",
        "",
        "COMMANDS:",
        *("   " + row for row in _table(commands)),
        "",
        "GLOBAL OPTIONS:",
        *("   " + row for row in fl.format_flags(GLOBAL_FLAGS)),
    ]
    return "\n".join(lines) + "\n"


def command_help(full_name: str, cmd: Command) -> str:
    if cmd.subcommands:
        rows = [(c.name, c.usage) for c in cmd.subcommands]
        lines = [
            "NAME:",
            f"   {full_name} - {cmd.usage}",
            "",
            "USAGE:",
            f"   {full_name} command [command options] [arguments...]",
            "",
            "COMMANDS:",
            *("   " + row for row in _table(rows)),
            "",
            "OPTIONS:",
            *("   " + row for row in fl.format_flags([HELP_FLAG])),
            "   ",
        ]
        return "\n".join(lines) + "\n"
    usage = (
        full_name + (" [command options]" if cmd.flags else "") + " " + (cmd.args_usage or "[arguments...]")
    )
    lines = ["NAME:", f"   {full_name} - {cmd.usage}", "", "USAGE:", f"   {usage}"]
    if cmd.description:
        lines += ["", "DESCRIPTION:", f"   {cmd.description}"]
    if cmd.flags:
        lines += ["", "OPTIONS:", *("   " + row for row in fl.format_flags(cmd.flags)), "   "]
    return "\n".join(lines) + "\n"


# --- dispatch -------------------------------------------------------------------------------------


def _find(commands: list[Command], name: str) -> Command | None:
    for c in commands:
        if name == c.name or name in c.aliases:
            return c
    return None


def _run_command(
    cmd: Command,
    full_name: str,
    args: list[str],
    gflags: dict[str, Any],
    io: tuple[TextIO, TextIO, TextIO],
    env: dict[str, str],
) -> int:
    stdin, stdout, stderr = io
    if cmd.subcommands:
        if args and not args[0].startswith("-"):
            sub = _find(cmd.subcommands, args[0])
            if sub is None:
                stderr.write(f"No help topic for '{args[0]}'\n")
                return EXIT_UNKNOWN_COMMAND
            return _run_command(sub, f"{full_name} {sub.name}", args[1:], gflags, io, env)
        stdout.write(command_help(full_name, cmd))
        return EXIT_SUCCESS
    specs = [*cmd.flags, HELP_FLAG]
    try:
        values, rest = fl.parse(specs, fl.reorder(specs, args))
    except fl.HelpRequested:
        stdout.write(command_help(full_name, cmd))
        return EXIT_SUCCESS
    except fl.FlagError as err:
        stdout.write(f"Incorrect Usage: {err}\n\n")
        stdout.write(command_help(full_name, cmd))
        stderr.write(f"{err}\n")
        return EXIT_BAD_ARGS
    if values["help"]:
        stdout.write(command_help(full_name, cmd))
        return EXIT_SUCCESS
    ctx = Context(gflags, values, rest, stdin, stdout, stderr, env, full_name.split(" ", 1)[0])
    assert cmd.action is not None
    try:
        cmd.action(ctx)
    except Exit as done:
        return done.code
    except KeyboardInterrupt:
        return EXIT_SUCCESS
    return EXIT_SUCCESS


def run(
    argv: list[str],
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    env: dict[str, str] | None = None,
    name: str = APP_NAME,
) -> int:
    """Run one invocation (``argv`` without the program name); returns the exit code."""
    io = (stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    out, err = io[1], io[2]
    env = dict(os.environ) if env is None else env
    try:
        gflags, rest = fl.parse(GLOBAL_FLAGS, argv)
    except fl.HelpRequested:
        out.write(app_help(name))
        return EXIT_SUCCESS
    except fl.FlagError as e:
        out.write(f"Incorrect Usage. {e}\n\n")
        out.write(app_help(name))
        err.write(f"{e}\n")
        return EXIT_BAD_ARGS
    if gflags["version"]:
        # etcdctl's two lines first (the etcdctl release whose behaviour this copies), so scripts
        # that parse them keep working; then fastkv's own release.
        out.write(f"{name} version: {VERSION}\nAPI version: 2\nfastkv version: {fastkv.__version__}\n")
        return EXIT_SUCCESS
    if gflags["help"] or not rest:
        out.write(app_help(name))
        return EXIT_SUCCESS
    if rest[0] in ("help", "h"):
        topic = _find(COMMANDS, rest[1]) if len(rest) > 1 else None
        if len(rest) > 1 and topic is None:
            err.write(f"No help topic for '{rest[1]}'\n")
            return EXIT_UNKNOWN_COMMAND
        out.write(command_help(f"{name} {topic.name}", topic) if topic else app_help(name))
        return EXIT_SUCCESS
    cmd = _find(COMMANDS, rest[0]) or _find(EXTRA_COMMANDS, rest[0])
    if cmd is None:
        err.write(f"No help topic for '{rest[0]}'\n")
        return EXIT_UNKNOWN_COMMAND
    return _run_command(cmd, f"{name} {cmd.name}", rest[1:], gflags, io, env)


def main() -> None:
    code = run(sys.argv[1:])
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
