"""Server configuration: etcd 3.4's flags, ``ETCD_*`` environment variables and YAML config file.

``parse_config(argv, environ)`` turns a command line into a ``Config`` the way ``etcd`` 3.4 does
(``etcdmain/config.go``, ``pkg/flags``, ``embed.Config.Validate``), so that an etcd unit file or
container spec starts fastkv unchanged.  Rules, in the order etcd applies them:

1. Go ``flag`` syntax: ``-f``, ``--f``, ``-f=v``, ``--f=v``, ``-f v`` (not for booleans, which take
   ``--f`` or ``--f=<ParseBool>``).  Parsing stops at ``--`` or at the first non-flag argument,
   which is then an error.  Syntax errors, unknown flags and unparsable values are ``ConfigError``
   with ``exit_code`` 2 and the usage in ``details``; ``-h``/``--help`` ask for the help text.
2. ``--version`` is honoured right after parsing, before anything else is looked at.
3. With ``--config-file`` (or ``ETCD_CONFIG_FILE``) the YAML file is the whole configuration: every
   other flag and environment variable is ignored.  Keys are the flag names.
4. Otherwise every flag not given on the command line is taken from ``ETCD_<FLAG>`` when that is
   non-empty (a flag counts as *set* either way).  An ``ETCD_*`` variable whose flag was also given
   on the command line is fatal, even when empty; other unknown ``ETCD_*`` variables are warnings.
5. ``validate``: the checks of ``embed.Config.Validate`` with etcd's error texts, reported as
   ``error verifying flags, <text>. See 'fastkv --help'.`` with exit code 1.
6. On first boot (no ``*.wal`` file in the WAL dir yet) the initial cluster is checked as etcd's
   ``VerifyBootstrap``/``VerifyJoinExisting`` do; once a WAL exists the ``--initial-*`` flags are
   ignored, as in etcd.

Every flag etcd 3.4.23 knows is accepted; those fastkv has no use for (gRPC, v3 backend, auth
tokens, experimental ...) are type-checked like etcd does and otherwise ignored with a debug note.
fastkv differs from etcd on purpose in two defaults: the data dir is ``<name>.fastkv``, and when
``--initial-cluster`` is not given it is ``<name>=<each --initial-advertise-peer-url>`` for every
name (etcd keeps ``default=http://localhost:2380`` for the default name, which then fails).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fastkv
from fastkv.tls import TLSInfo

ENV_PREFIX = "ETCD_"
ETCD_API_VERSION = fastkv.ETCD_SERVER_VERSION

DEFAULT_LISTEN_PEER_URL = "http://localhost:2380"
DEFAULT_LISTEN_CLIENT_URL = "http://localhost:2379"
DEFAULT_ADVERTISE_PEER_URL = "http://localhost:2380"
DEFAULT_ADVERTISE_CLIENT_URL = "http://localhost:2379"
MAX_ELECTION_MS = 50000

LOG_LEVELS = ("debug", "info", "warn", "error", "dpanic", "panic", "fatal")


class ConfigError(Exception):
    """A configuration etcd would refuse.

    ``str(err)`` is the line to print (etcd's wording); ``message`` the bare error; ``exit_code``
    is 2 for command-line syntax errors (Go's flag package) and 1 otherwise; ``details`` is text to
    print after the line (the usage for syntax errors), possibly empty.
    """

    def __init__(self, message: str, exit_code: int = 1, details: str = "", line: str | None = None):
        super().__init__(message if line is None else line)
        self.message = message
        self.exit_code = exit_code
        self.details = details


def _verify_error(message: str, details: str = "") -> ConfigError:
    # How etcdmain reports what parse/validate return.
    return ConfigError(message, 1, details, f"error verifying flags, {message}. See 'fastkv --help'.")


def _syntax_error(message: str) -> ConfigError:
    return ConfigError(message, 2, USAGE)


class LogLine(str):
    """A line for the server log, produced while parsing; ``level`` is a ``logging`` level."""

    level: int

    def __new__(cls, level: int, text: str) -> LogLine:
        line = super().__new__(cls, text)
        line.level = level
        return line


# ---------------------------------------------------------------------------------------------
# Go value syntax: strconv.ParseBool, ParseInt/ParseUint with base 0, time.ParseDuration, url.Parse


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(s: str) -> bool:
    if s in _GO_TRUE:
        return True
    if s in _GO_FALSE:
        return False
    raise ValueError("parse error")


_INT_BODY = {
    10: re.compile(r"[0-9](?:_?[0-9])*"),
    16: re.compile(r"_?[0-9a-fA-F](?:_?[0-9a-fA-F])*"),
    8: re.compile(r"_?[0-7](?:_?[0-7])*"),
    2: re.compile(r"_?[01](?:_?[01])*"),
}


def parse_go_int(s: str, bits: int = 64, signed: bool = False) -> int:
    """``strconv.ParseInt/ParseUint(s, 0, bits)`` as Go's flag package reports it."""
    body, negative = s, False
    if signed and body[:1] in ("+", "-"):
        negative, body = body[0] == "-", body[1:]
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        base, digits = {"0x": 16, "0o": 8, "0b": 2}[prefix], body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, digits = 8, body[1:]
    else:
        base, digits = 10, body
    if not _INT_BODY[base].fullmatch(digits):
        raise ValueError("parse error")
    value = int(digits.replace("_", ""), base)
    if negative:
        value = -value
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise ValueError("value out of range")
    return value


_DURATION_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9}
_DURATION_UNITS_NS |= {"m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(s: str) -> float:
    """``time.ParseDuration`` in seconds (only the syntax matters to fastkv)."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if body == "0":
        return 0.0
    pos, total_ns = 0, 0.0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if not m or m.group(1) in ("", "."):
            raise ValueError("parse error")
        total_ns += float(m.group(1)) * _DURATION_UNITS_NS[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError("parse error")
    return (-total_ns if s.startswith("-") else total_ns) / 1e9


def _go_split_host_port(hostport: str) -> tuple[str, str]:
    """``net.SplitHostPort``: the port may be empty but the colon is required."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1 : end + 2] != ":" or "]" in hostport[end + 1 :]:
            raise ValueError("bad host:port")
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        raise ValueError("bad host:port")
    host, port = hostport.split(":")
    return host, port


def _go_parse_url(raw: str) -> tuple[str, str, str, str]:
    """``url.Parse`` reduced to what etcd checks: (scheme, host, path, rest-as-printed)."""
    scheme, rest = "", raw
    for i, c in enumerate(raw):
        if c.isascii() and c.isalpha():
            continue
        if c.isdigit() or c in "+-.":
            if i == 0:
                break
            continue
        if c == ":":
            if i == 0:
                raise ValueError(f'parse "{raw}": missing protocol scheme')
            scheme, rest = raw[:i].lower(), raw[i + 1 :]
        break
    suffix = ""
    for sep in ("#", "?"):
        if sep in rest:
            rest, tail = rest.split(sep, 1)
            suffix = sep + tail + suffix
    if not scheme and ":" in rest.split("/", 1)[0]:
        raise ValueError(f'parse "{raw}": first path segment in URL cannot contain colon')
    host, path = "", rest
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
        host = authority.rpartition("@")[2]
        if not host.startswith("["):
            _, colon, port = host.rpartition(":")
            if colon and port and not port.isdigit():
                raise ValueError(f'parse "{raw}": invalid port ":{port}" after host')
        rest = "//" + authority
    elif scheme and not rest.startswith("/"):
        path = ""  # opaque ("foo:bar"); etcd's scheme check rejects these anyway
    return scheme, host, path, f"{scheme}:{rest}{suffix}" if scheme else rest + suffix


def parse_url(raw: str) -> str:
    """One URL as etcd's ``types.NewURLs`` accepts it, normalized like Go's ``url.String``."""
    raw = raw.strip()
    scheme, host, path, printed = _go_parse_url(raw)
    if scheme not in ("http", "https", "unix", "unixs"):
        raise ValueError(f"URL scheme must be http, https, unix, or unixs: {raw}")
    try:
        _go_split_host_port(host)
    except ValueError:
        raise ValueError(f'URL address does not have the form "host:port": {raw}') from None
    if path:
        raise ValueError(f"URL must not contain a path: {raw}")
    return printed


def parse_urls(value: str) -> list[str]:
    """A comma-separated URL list as etcd's URL flags take it: validated, sorted, deduplicated."""
    return sorted({parse_url(part) for part in value.split(",")})


def url_host_port(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL that ``parse_url`` accepted; port 0 when it is empty."""
    scheme, host, _, _ = _go_parse_url(url)
    hostname, port = _go_split_host_port(host)
    return scheme, hostname, int(port) if port else 0


def parse_initial_cluster(value: str) -> list[tuple[str, str]]:
    """``name=url,name=url`` (a name may repeat) as etcd's ``types.NewURLsMap`` reads it.

    Entries without ``=`` get an empty URL (which then fails the URL check), empty entries are
    skipped.  The pairs keep the given order.
    """
    pairs: list[tuple[str, str]] = []
    for entry in value.split(","):
        if entry == "":
            continue
        name, _, url = entry.partition("=")
        pairs.append((name, parse_url(url)))
    return pairs


def _cluster_string(pairs: list[tuple[str, str]]) -> str:
    # types.URLsMap.String(): names sorted, each name's URLs sorted.
    return ",".join(f"{n}={u}" for n, u in sorted(pairs))


# ---------------------------------------------------------------------------------------------
# The flag table


@dataclass(frozen=True, slots=True)
class _Flag:
    name: str
    kind: str  # str bool uint uint64 uint32 int int64 duration urls cors strings choice ignored
    default: Any
    used: bool = True  # False: accepted for etcd compatibility, no effect in fastkv
    choices: tuple[str, ...] = ()

    @property
    def is_bool(self) -> bool:
        return self.kind in ("bool", "ignored")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")


def _flags() -> dict[str, _Flag]:
    f = _Flag
    table = [
        f("config-file", "str", ""),
        # member
        f("name", "str", "default"),
        f("data-dir", "str", ""),
        f("wal-dir", "str", ""),
        f("snapshot-count", "uint64", 100000),
        f("heartbeat-interval", "uint", 100),
        f("election-timeout", "uint", 1000),
        f("initial-election-tick-advance", "bool", True, used=False),
        f("listen-peer-urls", "urls", [DEFAULT_LISTEN_PEER_URL]),
        f("listen-client-urls", "urls", [DEFAULT_LISTEN_CLIENT_URL]),
        f("max-snapshots", "uint", 5),
        f("max-wals", "uint", 5),
        f("quota-backend-bytes", "int64", 0, used=False),
        f("backend-batch-interval", "duration", 0.0, used=False),
        f("backend-batch-limit", "int", 0, used=False),
        f("max-txn-ops", "uint", 128, used=False),
        f("max-request-bytes", "uint", 1572864),
        f("max-concurrent-streams", "uint32", (1 << 32) - 1, used=False),
        f("grpc-keepalive-min-time", "duration", 5.0, used=False),
        f("grpc-keepalive-interval", "duration", 7200.0, used=False),
        f("grpc-keepalive-timeout", "duration", 20.0, used=False),
        # clustering
        f("initial-advertise-peer-urls", "urls", [DEFAULT_ADVERTISE_PEER_URL]),
        f("initial-cluster", "str", f"default={DEFAULT_ADVERTISE_PEER_URL}"),
        f("initial-cluster-state", "choice", "new", choices=("new", "existing")),
        f("initial-cluster-token", "str", "etcd-cluster"),
        f("advertise-client-urls", "urls", [DEFAULT_ADVERTISE_CLIENT_URL]),
        f("discovery", "str", ""),
        f("discovery-fallback", "choice", "proxy", choices=("proxy", "exit")),
        f("discovery-proxy", "str", ""),
        f("discovery-srv", "str", ""),
        f("discovery-srv-name", "str", ""),
        f("strict-reconfig-check", "bool", True),
        f("pre-vote", "bool", False, used=False),
        f("auto-compaction-retention", "str", "0", used=False),
        f("auto-compaction-mode", "str", "periodic", used=False),
        f("enable-v2", "bool", True),
        # security
        f("cert-file", "str", ""),
        f("key-file", "str", ""),
        f("client-cert-auth", "bool", False),
        f("client-crl-file", "str", ""),
        f("client-cert-allowed-hostname", "str", "", used=False),
        f("trusted-ca-file", "str", ""),
        f("auto-tls", "bool", False),
        f("peer-cert-file", "str", ""),
        f("peer-key-file", "str", ""),
        f("peer-client-cert-auth", "bool", False),
        f("peer-trusted-ca-file", "str", ""),
        f("peer-cert-allowed-cn", "str", ""),
        f("peer-cert-allowed-hostname", "str", "", used=False),
        f("peer-auto-tls", "bool", False),
        f("peer-crl-file", "str", ""),
        f("cipher-suites", "strings", []),
        f("cors", "cors", ["*"]),
        f("host-whitelist", "strings", ["*"]),
        # auth (v3)
        f("auth-token", "str", "simple", used=False),
        f("bcrypt-cost", "uint", 10, used=False),
        f("auth-token-ttl", "uint", 300, used=False),
        # profiling and monitoring
        f("enable-pprof", "bool", False),
        f("metrics", "str", "basic"),
        f("listen-metrics-urls", "urls", []),
        # logging
        f("logger", "str", "capnslog"),
        f("log-output", "strings", ["default"], used=False),
        f("log-outputs", "strings", ["default"]),
        f("log-level", "str", "info"),
        f("debug", "bool", False),
        f("log-package-levels", "str", "", used=False),
        # v2 proxy
        f("proxy", "choice", "off", choices=("off", "readonly", "on")),
        f("proxy-failure-wait", "uint", 5000, used=False),
        f("proxy-refresh-interval", "uint", 30000, used=False),
        f("proxy-dial-timeout", "uint", 1000, used=False),
        f("proxy-write-timeout", "uint", 5000, used=False),
        f("proxy-read-timeout", "uint", 0, used=False),
        # experimental and unsafe
        f("experimental-initial-corrupt-check", "bool", False, used=False),
        f("experimental-corrupt-check-time", "duration", 0.0, used=False),
        f("experimental-enable-v2v3", "str", "", used=False),
        f("experimental-backend-bbolt-freelist-type", "str", "array", used=False),
        f("experimental-enable-lease-checkpoint", "bool", False, used=False),
        f("experimental-compaction-batch-limit", "int", 1000, used=False),
        f("experimental-peer-skip-client-san-verification", "bool", False, used=False),
        f("experimental-watch-progress-notify-interval", "duration", 600.0, used=False),
        f("experimental-warning-apply-duration", "duration", 0.1, used=False),
        f("enable-grpc-gateway", "bool", True, used=False),
        f("unsafe-no-fsync", "bool", False, used=False),
        f("force-new-cluster", "bool", False),
        f("version", "bool", False),
    ]
    # Flags of etcd 0.4 that etcd 3.4 still swallows, warning that they are ignored.
    for name in (
        "cluster-active-size",
        "cluster-remove-delay",
        "cluster-sync-interval",
        "config",
        "force",
        "max-result-buffer",
        "max-retry-attempts",
        "peer-heartbeat-interval",
        "peer-election-timeout",
        "retry-interval",
        "snapshot",
        "v",
        "vv",
        "test.coverprofile",
        "test.outputdir",
    ):
        table.append(f(name, "ignored", None, used=False))
    return {fl.name: fl for fl in table}


FLAGS: dict[str, _Flag] = _flags()
# Go's FlagSet.VisitAll order, which is the order etcd reads environment variables in.
_FLAGS_SORTED = sorted(FLAGS.values(), key=lambda fl: fl.name)


class _FlagValues:
    """Parsed flag values plus which flags were set (by command line or environment)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {name: _copy(fl.default) for name, fl in FLAGS.items()}
        self.set_names: list[str] = []
        self.log: list[LogLine] = []

    def set(self, fl: _Flag, raw: str) -> None:
        """``flag.Value.Set``: raises ValueError with the text Go would put after the colon."""
        kind = fl.kind
        if kind == "str":
            value: Any = raw
        elif kind == "bool":
            value = parse_go_bool(raw)
        elif kind in ("uint", "uint64"):
            value = parse_go_int(raw, 64)
        elif kind == "uint32":
            value = _parse_strconv_uint32(raw)
        elif kind == "int" or kind == "int64":
            value = parse_go_int(raw, 64, signed=True)
        elif kind == "duration":
            value = parse_go_duration(raw)
        elif kind == "choice":
            if raw not in fl.choices:
                raise ValueError("invalid value")
            value = raw
        elif kind == "urls":
            value = parse_urls(raw)
        elif kind == "cors":
            value = _set_cors(self.values[fl.name], raw)
        elif kind == "strings":
            value = list(dict.fromkeys(raw.split(",")))
        else:  # ignored
            self.log.append(LogLine(logging.WARNING, f'flag "-{fl.name}" is no longer supported - ignoring.'))
            value = None
        self.values[fl.name] = value
        if fl.name not in self.set_names:
            self.set_names.append(fl.name)

    def is_set(self, name: str) -> bool:
        return name in self.set_names


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _parse_strconv_uint32(raw: str) -> int:
    # --max-concurrent-streams has its own flag.Value that passes strconv's error through.
    try:
        return parse_go_int(raw, 32)
    except ValueError as e:
        reason = "value out of range" if "range" in str(e) else "invalid syntax"
        raise ValueError(f'strconv.ParseUint: parsing "{raw}": {reason}') from None


def _set_cors(current: list[str], raw: str) -> list[str]:
    # flags.UniqueURLs with the "*" exception: "*" joins the current set, a URL list replaces it.
    if raw in current:
        return current
    if raw == "*":
        return [*current, "*"]
    return parse_urls(raw)


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_argv(argv: list[str], fv: _FlagValues) -> tuple[list[str], bool]:
    """Go's ``FlagSet.Parse``: returns (remaining arguments, help requested)."""
    args = list(argv)
    while args:
        s = args[0]
        if len(s) < 2 or s[0] != "-":
            break
        minuses = 2 if s[1] == "-" else 1
        if s == "--":
            args.pop(0)
            break
        name = s[minuses:]
        if not name or name[0] in "-=":
            raise _syntax_error(f"bad flag syntax: {s}")
        args.pop(0)
        has_value, value = False, ""
        if "=" in name[1:]:
            i = name.index("=", 1)
            name, value, has_value = name[:i], name[i + 1 :], True
        fl = FLAGS.get(name)
        if fl is None:
            if name in ("help", "h"):
                return args, True
            raise _syntax_error(f"flag provided but not defined: -{name}")
        if fl.is_bool:
            try:
                fv.set(fl, value if has_value else "true")
            except ValueError as e:
                if has_value:
                    raise _syntax_error(f'invalid boolean value "{value}" for -{name}: {e}') from None
                raise _syntax_error(f"invalid boolean flag {name}: {e}") from None
            continue
        if not has_value and args:
            has_value, value = True, args.pop(0)
        if not has_value:
            raise _syntax_error(f"flag needs an argument: -{name}")
        try:
            fv.set(fl, value)
        except ValueError as e:
            raise _syntax_error(f'invalid value "{value}" for flag -{name}: {e}') from None
    return args, False


def _apply_environ(fv: _FlagValues, environ: Mapping[str, str]) -> None:
    """``flags.SetFlagsFromEnv``: fill unset flags from ``ETCD_*``; conflicts are fatal."""
    already_set = {FLAGS[name].env for name in fv.set_names}
    used: set[str] = set()
    error: str | None = None
    for fl in _FLAGS_SORTED:
        key = fl.env
        if key in already_set:
            continue
        raw = environ.get(key, "")
        if raw == "":
            continue
        used.add(key)
        try:
            fv.set(fl, raw)
        except ValueError as e:
            error = f'invalid value "{raw}" for {key}: {e}'  # etcd reports the last one
            continue
        fv.log.append(LogLine(logging.INFO, f"recognized and used environment variable {key}={raw}"))
    for key, raw in environ.items():
        if key in used:
            continue
        if key in already_set:
            raise ConfigError(
                f'conflicting environment variable "{key}" is shadowed by corresponding command-line '
                "flag (either unset environment variable or disable flag)"
            )
        if key.startswith(ENV_PREFIX):
            fv.log.append(LogLine(logging.WARNING, f"unrecognized environment variable {key}={raw}"))
    if error is not None:
        raise _verify_error(error)


# ---------------------------------------------------------------------------------------------
# Config file


_GO_TYPES = {
    "str": "string",
    "bool": "bool",
    "uint": "uint",
    "uint64": "uint64",
    "uint32": "uint32",
    "int": "int",
    "int64": "int64",
    "duration": "time.Duration",
    "strings": "[]string",
    "choice": "string",
    "urls": "string",
    "cors": "string",
}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml  # only configurations from files need it

    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        reason = (e.strerror or str(e))[:1].lower() + (e.strerror or str(e))[1:]
        raise _verify_error(f"open {path}: {reason}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise _verify_error(f"error converting YAML to JSON: yaml: {where}{problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise _verify_error(
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
            f"{_json_kind(doc).split()[0]} into Go value of type embed.configYAML"
        )
    return {str(k): v for k, v in doc.items()}


def _file_value(fl: _Flag, value: Any) -> Any:
    """A YAML value converted the way encoding/json would decode it into etcd's struct field."""

    def mismatch() -> ConfigError:
        return _verify_error(
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
            f"{_json_kind(value)} into Go struct field configYAML.{fl.name} of type {_GO_TYPES[fl.kind]}"
        )

    kind = fl.kind
    if value is None:
        return _copy(fl.default)
    if kind in ("str", "choice", "urls", "cors"):
        # sigs.k8s.io/yaml turns scalars into strings when the target field is a string.
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | str):
            return str(value)
        raise mismatch()
    if kind == "bool":
        if not isinstance(value, bool):
            raise mismatch()
        return value
    if kind in ("uint", "uint64", "uint32", "int", "int64", "duration"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise mismatch()
        signed = kind in ("int", "int64", "duration")
        if value < 0 and not signed:
            raise mismatch()
        return value / 1e9 if kind == "duration" else value  # JSON durations are nanoseconds
    if kind == "strings":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise mismatch()
        return list(value)
    return None  # ignored flags have no field in etcd's struct


def _apply_file(fv: _FlagValues, doc: dict[str, Any]) -> None:
    for name, fl in FLAGS.items():
        if name not in doc or name in ("config-file", "version") or fl.kind == "ignored":
            continue
        value = _file_value(fl, doc[name])
        if fl.kind == "urls":
            if value == "":
                continue  # empty keeps etcd's default
            try:
                value = parse_urls(value)
            except ValueError as e:
                raise ConfigError(f"unexpected error setting up {name}: {e}") from None
        elif fl.kind == "cors":
            if value == "":
                continue
            try:
                value = _set_cors([], value)
            except ValueError as e:
                raise ConfigError(f"unexpected error setting up cors: {e}") from None
        elif fl.kind == "choice":
            if value == "" and name == "initial-cluster-state":
                value = "new"
            elif value == "" and name != "initial-cluster-state":
                continue
            elif value not in fl.choices:
                if name == "initial-cluster-state":
                    raise _verify_error(f'unexpected clusterState "{value}"')
                what = "proxyFlag" if name == "proxy" else f"{name} flag"
                raise ConfigError(f"unexpected error setting up {what}: invalid value")
        fv.values[name] = value
        fv.set_names.append(name)
    for prefix, section in (("", "client-transport-security"), ("peer-", "peer-transport-security")):
        sec = doc.get(section)
        if not isinstance(sec, dict):
            continue
        for key in ("cert-file", "key-file", "client-cert-auth", "trusted-ca-file", "auto-tls"):
            if key in sec:
                fl = FLAGS[prefix + key]
                fv.values[fl.name] = _file_value(fl, sec[key])
                fv.set_names.append(fl.name)


# ---------------------------------------------------------------------------------------------
# The result


@dataclass(slots=True)
class Config:
    """One member's configuration (etcd 3.4 defaults; durations in milliseconds)."""

    name: str = "default"
    data_dir: str = "default.fastkv"
    wal_dir: str = ""
    snapshot_count: int = 100000
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    listen_peer_urls: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN_PEER_URL])
    listen_client_urls: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN_CLIENT_URL])
    initial_advertise_peer_urls: list[str] = field(default_factory=lambda: [DEFAULT_ADVERTISE_PEER_URL])
    advertise_client_urls: list[str] = field(default_factory=lambda: [DEFAULT_ADVERTISE_CLIENT_URL])
    # (name, peer URL) pairs; empty when bootstrapping by discovery or when a WAL already exists
    # and the initial cluster could not be parsed (it is ignored then, as in etcd).
    initial_cluster: list[tuple[str, str]] = field(
        default_factory=lambda: [("default", DEFAULT_ADVERTISE_PEER_URL)]
    )
    initial_cluster_token: str = "etcd-cluster"
    initial_cluster_state: str = "new"
    discovery: str = ""
    discovery_fallback: str = "proxy"
    discovery_proxy: str = ""
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    strict_reconfig_check: bool = True
    force_new_cluster: bool = False
    # etcd 3.4 defaults to false; fastkv serves v2 unless told not to (it is the API it has).
    enable_v2: bool = True
    max_snapshots: int = 5
    max_wals: int = 5
    max_request_bytes: int = 1572864
    # Allowed CORS origins; {"*"} (etcd 3.4's default) allows every origin.
    cors: set[str] = field(default_factory=lambda: {"*"})
    host_whitelist: set[str] = field(default_factory=lambda: {"*"})
    proxy: str = "off"
    cert_file: str = ""
    key_file: str = ""
    client_cert_auth: bool = False
    trusted_ca_file: str = ""
    auto_tls: bool = False
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_client_cert_auth: bool = False
    peer_trusted_ca_file: str = ""
    peer_auto_tls: bool = False
    client_crl_file: str = ""
    peer_crl_file: str = ""
    peer_cert_allowed_cn: str = ""
    # Go's cipher suite names (tls.GO_CIPHER_SUITES); empty: OpenSSL's defaults for TLS 1.2+.
    cipher_suites: list[str] = field(default_factory=list)
    logger: str = "capnslog"
    log_level: str = "info"  # "debug" when --debug is given
    log_outputs: list[str] = field(default_factory=lambda: ["default"])  # stderr, stdout or files
    debug: bool = False
    enable_pprof: bool = False
    metrics: str = "basic"
    listen_metrics_urls: list[str] = field(default_factory=list)
    config_file: str = ""
    # --version / --help: main prints output_text to stdout and exits 0; nothing else is parsed.
    show_version: bool = False
    show_help: bool = False
    output_text: str = ""
    # Lines for the server log, in order (str subclasses carrying a ``level``).
    log_lines: list[LogLine] = field(default_factory=list)
    # Flags that were set (command line, environment or file), by flag name.
    explicit: set[str] = field(default_factory=set)

    @property
    def client_tls(self) -> TLSInfo:
        """The client listeners' TLS settings (--cert-file, --key-file, ...)."""
        return TLSInfo(
            cert_file=self.cert_file,
            key_file=self.key_file,
            trusted_ca_file=self.trusted_ca_file,
            client_cert_auth=self.client_cert_auth,
            crl_file=self.client_crl_file,
            cipher_suites=tuple(self.cipher_suites),
            auto_tls=self.auto_tls,
        )

    @property
    def peer_tls(self) -> TLSInfo:
        """The peer listeners' and dialers' TLS settings (--peer-cert-file, ...)."""
        return TLSInfo(
            cert_file=self.peer_cert_file,
            key_file=self.peer_key_file,
            trusted_ca_file=self.peer_trusted_ca_file,
            client_cert_auth=self.peer_client_cert_auth,
            crl_file=self.peer_crl_file,
            allowed_cn=self.peer_cert_allowed_cn,
            cipher_suites=tuple(self.cipher_suites),
            auto_tls=self.peer_auto_tls,
        )

    @property
    def member_dir(self) -> str:
        return os.path.join(self.data_dir, "member")

    @property
    def wal_path(self) -> str:
        return self.wal_dir or os.path.join(self.member_dir, "wal")

    @property
    def snap_path(self) -> str:
        return os.path.join(self.member_dir, "snap")

    def member_initialized(self) -> bool:
        """True once the member has a WAL (etcd's ``wal.Exist``): the --initial-* flags are ignored."""
        try:
            return any(n.endswith(".wal") for n in os.listdir(self.wal_path))
        except OSError:
            return False

    def initial_cluster_token_for_ids(self) -> str:
        """The salt of bootstrap member IDs: the discovery URL when discovering (spec §3.3)."""
        return self.discovery or self.initial_cluster_token

    def verify_bootstrap(self) -> None:
        """etcd's ``VerifyBootstrap`` / ``VerifyJoinExisting`` for a member without a WAL."""
        if self.discovery or self.discovery_srv:
            if self.initial_cluster_state == "existing" and self.discovery:
                raise ConfigError("discovery URL should not be set when joining existing initial cluster")
            return
        mine = sorted(u for n, u in self.initial_cluster if n == self.name)
        if not mine:
            raise ConfigError(f'couldn\'t find local name "{self.name}" in the initial cluster configuration')
        if self.initial_cluster_state == "new":
            self._verify_advertised_in_cluster(mine)
        seen: set[str] = set()
        for _, url in self.initial_cluster:
            if url in seen:
                raise ConfigError(
                    f"initial cluster {_cluster_string(self.initial_cluster)} has duplicate url"
                )
            seen.add(url)

    def _verify_advertised_in_cluster(self, mine: list[str]) -> None:
        advertised = sorted(self.initial_advertise_peer_urls)
        if [_resolve_loopback(u) for u in advertised] == [_resolve_loopback(u) for u in mine]:
            return
        if len(advertised) != len(mine):
            reason = f"len({_go_quote_list(advertised)}) != len({_go_quote_list(mine)})"
        else:
            a, b = next((a, b) for a, b in zip(advertised, mine, strict=True) if a != b)
            reason = f'resolved urls: "{a}" != "{b}"'
        missing = [u for u in mine if u not in advertised]
        if missing:
            raise ConfigError(
                f"--initial-cluster has {','.join(f'{self.name}={u}' for u in missing)} but missing from "
                f"--initial-advertise-peer-urls={','.join(advertised)} ({reason})"
            )
        extra = [u for u in advertised if u not in mine]
        ours = ",".join(f"{self.name}={u}" for u in advertised)
        if extra:
            raise ConfigError(
                f"--initial-advertise-peer-urls has {','.join(extra)} but missing from --initial-cluster={ours}"
            )
        raise ConfigError(
            f"failed to resolve {','.join(advertised)} to match --initial-cluster={ours} ({reason})"
        )


def _resolve_loopback(url: str) -> str:
    # etcd compares resolved addresses; the one name fastkv resolves itself is localhost.
    return url.replace("://localhost:", "://127.0.0.1:", 1)


def _go_quote_list(items: list[str]) -> str:
    return "[" + " ".join(f'"{s}"' for s in items) + "]"


# ---------------------------------------------------------------------------------------------
# parse_config


def parse_config(argv: list[str], environ: Mapping[str, str]) -> Config:
    """The configuration for ``fastkv <argv>`` with this environment; raises ``ConfigError``."""
    fv = _FlagValues()
    rest, want_help = _parse_argv(argv, fv)
    if want_help:
        return Config(show_help=True, output_text=HELP)
    if rest:
        raise _verify_error(f"'{rest[0]}' is not a valid flag")
    if fv.values["version"]:
        return Config(show_version=True, output_text=version_text())

    config_file = fv.values["config-file"] or environ.get(FLAGS["config-file"].env, "")
    if config_file:
        fv = _FlagValues()
        fv.log.append(
            LogLine(
                logging.INFO,
                f'Loading server configuration from "{config_file}". Other configuration command line '
                "flags and environment variables will be ignored if provided.",
            )
        )
        _apply_file(fv, _load_yaml(config_file))
    else:
        _apply_environ(fv, environ)
    cfg = _build(fv, from_file=bool(config_file))
    cfg.config_file = config_file
    _validate(cfg, fv, from_file=bool(config_file))
    if not cfg.member_initialized():
        cfg.verify_bootstrap()
    return cfg


def _build(fv: _FlagValues, from_file: bool) -> Config:
    v = fv.values
    cfg = Config(
        name=v["name"],
        data_dir=v["data-dir"],
        wal_dir=v["wal-dir"],
        snapshot_count=v["snapshot-count"],
        heartbeat_interval_ms=v["heartbeat-interval"],
        election_timeout_ms=v["election-timeout"],
        listen_peer_urls=v["listen-peer-urls"],
        listen_client_urls=v["listen-client-urls"],
        initial_advertise_peer_urls=v["initial-advertise-peer-urls"],
        advertise_client_urls=v["advertise-client-urls"],
        initial_cluster=[],
        initial_cluster_token=v["initial-cluster-token"],
        initial_cluster_state=v["initial-cluster-state"],
        discovery=v["discovery"],
        discovery_fallback=v["discovery-fallback"],
        discovery_proxy=v["discovery-proxy"],
        discovery_srv=v["discovery-srv"],
        discovery_srv_name=v["discovery-srv-name"],
        strict_reconfig_check=v["strict-reconfig-check"],
        force_new_cluster=v["force-new-cluster"],
        enable_v2=v["enable-v2"],
        max_snapshots=v["max-snapshots"],
        max_wals=v["max-wals"],
        max_request_bytes=v["max-request-bytes"],
        cors=set(v["cors"]),
        host_whitelist=set(v["host-whitelist"]),
        proxy=v["proxy"],
        cert_file=v["cert-file"],
        key_file=v["key-file"],
        client_cert_auth=v["client-cert-auth"],
        trusted_ca_file=v["trusted-ca-file"],
        auto_tls=v["auto-tls"],
        peer_cert_file=v["peer-cert-file"],
        peer_key_file=v["peer-key-file"],
        peer_client_cert_auth=v["peer-client-cert-auth"],
        peer_trusted_ca_file=v["peer-trusted-ca-file"],
        peer_auto_tls=v["peer-auto-tls"],
        client_crl_file=v["client-crl-file"],
        peer_crl_file=v["peer-crl-file"],
        peer_cert_allowed_cn=v["peer-cert-allowed-cn"],
        cipher_suites=list(v["cipher-suites"]),
        logger=v["logger"],
        log_level="debug" if v["debug"] else v["log-level"],
        log_outputs=v["log-outputs"],
        debug=v["debug"],
        enable_pprof=v["enable-pprof"],
        metrics=v["metrics"],
        listen_metrics_urls=v["listen-metrics-urls"],
        log_lines=fv.log,
        explicit=set(fv.set_names),
    )
    # Without --advertise-client-urls, explicit listen URLs must not be advertised as localhost.
    missing_advertise = fv.is_set("listen-client-urls") and not fv.is_set("advertise-client-urls")
    if not from_file and missing_advertise and not _may_be_proxy(cfg):
        cfg.advertise_client_urls = []
    for name in fv.set_names:
        if not FLAGS[name].used and FLAGS[name].kind != "ignored":  # those warned already
            fv.log.append(LogLine(logging.DEBUG, f"--{name} is accepted for etcd compatibility and ignored"))
    return cfg


def _may_be_proxy(cfg: Config) -> bool:
    return cfg.proxy != "off" or (cfg.discovery != "" and cfg.discovery_fallback == "proxy")


def _validate(cfg: Config, fv: _FlagValues, from_file: bool) -> None:
    """``embed.Config.Validate`` plus etcdmain's defaults, in etcd's order."""
    if cfg.logger not in ("capnslog", "zap"):
        raise _verify_error(f'unknown logger option "{cfg.logger}"')
    if cfg.log_level not in LOG_LEVELS:
        raise _verify_error(f'unknown level "{cfg.log_level}"')
    for urls in (cfg.listen_peer_urls, cfg.listen_client_urls, cfg.listen_metrics_urls):
        for url in urls:
            _check_bind_url(url)
    for flag_name, urls in (
        ("--initial-advertise-peer-urls", cfg.initial_advertise_peer_urls),
        ("--advertise-client-urls", cfg.advertise_client_urls),
    ):
        for url in urls:
            _, host, _, _ = _go_parse_url(url)
            reason = "" if _go_split_host_port(host)[0] else f"unexpected empty host ({url})"
            if reason:
                raise _verify_error(f'{flag_name} "{",".join(urls)}" must be "host:port" ({reason})')

    # Discovery replaces the default initial cluster; an explicit one is a conflict below.
    discovering = (
        cfg.discovery != "" or cfg.discovery_srv != "" or (not from_file and cfg.discovery_srv_name != "")
    )
    cluster_spec: str = fv.values["initial-cluster"]
    if not fv.is_set("initial-cluster"):
        cluster_spec = (
            ""
            if discovering
            else ",".join(f"{cfg.name or 'default'}={u}" for u in cfg.initial_advertise_peer_urls)
        )
    if sum(1 for s in (cfg.discovery, cluster_spec, cfg.discovery_srv) if s) > 1:
        raise _verify_error(
            'multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", '
            '"discovery" or "discovery-srv"'
        )
    if cfg.heartbeat_interval_ms <= 0:
        raise _verify_error(f"--heartbeat-interval must be >0 (set to {cfg.heartbeat_interval_ms}ms)")
    if cfg.election_timeout_ms <= 0:
        raise _verify_error(f"--election-timeout must be >0 (set to {cfg.election_timeout_ms}ms)")
    if 5 * cfg.heartbeat_interval_ms > cfg.election_timeout_ms:
        raise _verify_error(
            f"--election-timeout[{cfg.election_timeout_ms}ms] should be at least as 5 times as "
            f"--heartbeat-interval[{cfg.heartbeat_interval_ms}ms]"
        )
    if cfg.election_timeout_ms > MAX_ELECTION_MS:
        raise _verify_error(
            f"--election-timeout[{cfg.election_timeout_ms}ms] is too long, and should be set less than "
            f"{MAX_ELECTION_MS}ms"
        )
    if cfg.listen_client_urls and not cfg.advertise_client_urls and not _may_be_proxy(cfg):
        raise _verify_error(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly",
            "When listening on specific address(es), this fastkv process must advertise accessible "
            "url(s) to each connected client.",
        )
    mode = fv.values["auto-compaction-mode"]
    if mode not in ("", "periodic", "revision"):
        raise _verify_error(f'unknown auto-compaction-mode "{mode}"')

    if not cfg.data_dir:
        cfg.data_dir = f"{cfg.name}.fastkv"
        cfg.log_lines.append(
            LogLine(logging.WARNING, f"no data-dir provided, using default data-dir ./{cfg.data_dir}")
        )
    if cluster_spec:
        try:
            cfg.initial_cluster = parse_initial_cluster(cluster_spec)
        except ValueError as e:
            # Only a member that still has to bootstrap reads the initial cluster.
            if not cfg.member_initialized():
                raise ConfigError(f"error setting up initial cluster: {e}") from None


def _check_bind_url(url: str) -> None:
    scheme, host, _, _ = _go_parse_url(url)
    if scheme in ("unix", "unixs"):
        return
    hostname, _ = _go_split_host_port(host)
    if hostname == "localhost":
        return
    if not _is_ip(hostname):
        raise _verify_error(f"expected IP in URL for binding ({url})")


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Texts


def version_text() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(machine, machine)
    return (
        f"fastkv Version: {fastkv.__version__}\n"
        f"etcd API Version: {ETCD_API_VERSION}\n"
        f"Python Version: {platform.python_version()}\n"
        f"OS/Arch: {sys.platform}/{arch}\n"
    )


USAGE = """Usage:

  fastkv [flags]
    Start a fastkv server (etcd v2 API).

  fastkv --version
    Show the version of fastkv.

  fastkv -h | --help
    Show the help information about fastkv.

  fastkv --config-file
    Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.
"""


def _help() -> str:
    sections: list[tuple[str, list[tuple[str, str]]]] = [
        (
            "Member",
            [
                ("--name 'default'", "Human-readable name for this member."),
                ("--data-dir '${name}.fastkv'", "Path to the data directory."),
                ("--wal-dir ''", "Path to the dedicated wal directory."),
                (
                    "--snapshot-count '100000'",
                    "Number of committed transactions to trigger a snapshot to disk.",
                ),
                ("--heartbeat-interval '100'", "Time (in milliseconds) of a heartbeat interval."),
                ("--election-timeout '1000'", "Time (in milliseconds) for an election to timeout."),
                ("--listen-peer-urls 'http://localhost:2380'", "List of URLs to listen on for peer traffic."),
                (
                    "--listen-client-urls 'http://localhost:2379'",
                    "List of URLs to listen on for client traffic.",
                ),
                ("--max-snapshots '5'", "Maximum number of snapshot files to retain (0 is unlimited)."),
                ("--max-wals '5'", "Maximum number of wal files to retain (0 is unlimited)."),
                (
                    "--max-request-bytes '1572864'",
                    "Maximum client request size in bytes the server will accept.",
                ),
            ],
        ),
        (
            "Clustering",
            [
                (
                    "--initial-advertise-peer-urls 'http://localhost:2380'",
                    "List of this member's peer URLs to advertise to the rest of the cluster.",
                ),
                (
                    "--initial-cluster '${name}=${initial-advertise-peer-urls}'",
                    "Initial cluster configuration for bootstrapping.",
                ),
                ("--initial-cluster-state 'new'", "Initial cluster state ('new' or 'existing')."),
                (
                    "--initial-cluster-token 'etcd-cluster'",
                    "Initial cluster token for the cluster during bootstrap.",
                ),
                (
                    "--advertise-client-urls 'http://localhost:2379'",
                    "List of this member's client URLs to advertise to the public.",
                ),
                ("--discovery ''", "Discovery URL used to bootstrap the cluster."),
                (
                    "--discovery-fallback 'proxy'",
                    "Expected behavior ('exit' or 'proxy') when discovery services fails.",
                ),
                ("--discovery-proxy ''", "HTTP proxy to use for traffic to discovery service."),
                ("--discovery-srv ''", "DNS srv domain used to bootstrap the cluster."),
                ("--discovery-srv-name ''", "Suffix to the dns srv name queried when bootstrapping."),
                (
                    "--strict-reconfig-check 'true'",
                    "Reject reconfiguration requests that would cause quorum loss.",
                ),
                (
                    "--enable-v2 'true'",
                    "Accept etcd V2 client requests (etcd 3.4 defaults to false; false: /v2/... answers 404).",
                ),
            ],
        ),
        (
            "Security",
            [
                ("--cert-file ''", "Path to the client server TLS cert file."),
                ("--key-file ''", "Path to the client server TLS key file."),
                ("--client-cert-auth 'false'", "Enable client cert authentication."),
                ("--trusted-ca-file ''", "Path to the client server TLS trusted CA cert file."),
                ("--auto-tls 'false'", "Client TLS using generated certificates."),
                ("--peer-cert-file ''", "Path to the peer server TLS cert file."),
                ("--peer-key-file ''", "Path to the peer server TLS key file."),
                ("--peer-client-cert-auth 'false'", "Enable peer client cert authentication."),
                ("--peer-trusted-ca-file ''", "Path to the peer server TLS trusted CA file."),
                ("--peer-auto-tls 'false'", "Peer TLS using self-generated certificates."),
                ("--cors '*'", "Comma-separated whitelist of origins for CORS (* means allow all)."),
                (
                    "--host-whitelist '*'",
                    "Acceptable hostnames from HTTP client requests (* means allow all).",
                ),
            ],
        ),
        (
            "Profiling, monitoring and logging",
            [
                ("--enable-pprof 'false'", "Enable runtime profiling data via HTTP server."),
                ("--metrics 'basic'", "Set level of detail for exported metrics."),
                (
                    "--listen-metrics-urls ''",
                    "List of URLs to listen on for the metrics and health endpoints.",
                ),
                ("--log-level 'info'", "One of debug, info, warn, error, panic or fatal."),
                ("--debug 'false'", "Enable debug-level logging (same as --log-level=debug)."),
            ],
        ),
        (
            "v2 Proxy",
            [("--proxy 'off'", "Proxy mode setting ('off', 'readonly' or 'on').")],
        ),
        (
            "Unsafe feature",
            [("--force-new-cluster 'false'", "Force to create a new one-member cluster.")],
        ),
    ]
    out = [USAGE]
    for title, rows in sections:
        out.append(f"\n{title}:\n")
        out.extend(f"  {flag}\n    {text}\n" for flag, text in rows)
    ignored = sorted(n for n, fl in FLAGS.items() if not fl.used and fl.kind != "ignored")
    out.append("\nAccepted for etcd 3.4 compatibility, without effect in fastkv:\n")
    out.append("".join(f"  --{n}\n" for n in ignored))
    out.append(
        "\nEvery flag can also be set by the environment variable ETCD_<FLAG> (upper case, '-' -> '_').\n"
    )
    return "".join(out)


HELP = _help()

__all__ = [
    "FLAGS",
    "HELP",
    "USAGE",
    "Config",
    "ConfigError",
    "LogLine",
    "parse_config",
    "parse_initial_cluster",
    "parse_url",
    "parse_urls",
    "url_host_port",
    "version_text",
]
