"""Flag parsing and help formatting, without a server (expected values observed on etcdctl 3.4.23)."""

from __future__ import annotations

import io

import pytest

import fastkv
from fastkv.cli import flags as fl
from fastkv.cli.main import COMMANDS, command_help, run

SORT = fl.Flag(("sort",), "bool", "returns result in sorted order")
QUORUM = fl.Flag(("quorum", "q"), "bool", "require quorum for get request")
TTL = fl.Flag(("ttl",), "int", "key time-to-live in seconds", 0)
GET = [SORT, QUORUM, fl.Flag(("help", "h"), "bool", "show help")]


def parse(specs: list[fl.Flag], args: list[str]) -> tuple[dict, list[str]]:
    return fl.parse(specs, fl.reorder(specs, args))


def test_flags_after_arguments_are_moved_front() -> None:
    assert parse([TTL], ["/k", "v", "--ttl", "5"]) == ({"ttl": 5}, ["/k", "v"])
    assert parse(GET, ["/k", "--sort"])[0]["sort"] is True


def test_value_after_bool_flag_is_moved_too_and_stops_parsing() -> None:
    # etcdctl: "get -q /k --sort" sends sorted=false
    values, rest = parse(GET, ["-q", "/k", "--sort"])
    assert values["quorum"] is True and values["sort"] is False
    assert rest == ["/k", "--sort"]


def test_unknown_flag_after_argument_is_an_argument() -> None:
    assert parse(GET, ["/k", "--bogus"])[1] == ["/k", "--bogus"]
    with pytest.raises(fl.FlagError, match="flag provided but not defined: -bogus"):
        parse(GET, ["--bogus", "/k"])


def test_double_dash_ends_flags() -> None:
    assert parse([TTL], ["--", "/k", "-v"]) == ({"ttl": 0}, ["/k", "-v"])
    assert parse([TTL], ["--ttl", "3", "/k", "--", "-v"])[1] == ["/k", "--", "-v"]


def test_go_error_texts() -> None:
    with pytest.raises(fl.FlagError, match='invalid value "abc" for flag -ttl: parse error'):
        parse([TTL], ["--ttl", "abc"])
    with pytest.raises(fl.FlagError, match="flag needs an argument: -ttl"):
        parse([TTL], ["--ttl"])
    with pytest.raises(fl.FlagError, match='invalid boolean value "x" for -q: parse error'):
        parse(GET, ["-q=x"])
    with pytest.raises(fl.FlagError, match="bad flag syntax: ---x"):
        fl.parse(GET, ["---x"])


def test_bool_forms_and_single_dash_long_names() -> None:
    assert fl.parse(GET, ["-sort=false", "--quorum=T"])[0] == {"sort": False, "quorum": True, "help": False}
    assert fl.parse([TTL], ["-ttl=-5"])[0]["ttl"] == -5
    assert fl.parse([TTL], ["--ttl", "0x10"])[0]["ttl"] == 16


def test_help_flag_when_undefined() -> None:
    with pytest.raises(fl.HelpRequested):
        fl.parse([TTL], ["-h"])


@pytest.mark.parametrize(
    ("text", "seconds"), [("2s", 2.0), ("1m30s", 90.0), ("300ms", 0.3), ("1.5h", 5400.0), ("0", 0.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert fl.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1", "1x", "", "s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        fl.parse_duration(text)


def test_command_help_layout() -> None:
    get = next(c for c in COMMANDS if c.name == "get")
    assert command_help("etcdctl get", get) == (
        "NAME:\n   etcdctl get - retrieve the value of a key\n\nUSAGE:\n   etcdctl get [command options] <key>\n\n"
        "OPTIONS:\n   --sort        returns result in sorted order\n"
        "   --quorum, -q  require quorum for get request\n   \n"
    )
    rmdir = next(c for c in COMMANDS if c.name == "rmdir")
    assert command_help("etcdctl rmdir", rmdir).endswith("USAGE:\n   etcdctl rmdir <key>\n")


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(argv, io.StringIO(""), out, err, env={}, name="etcdctl")
    return code, out.getvalue(), err.getvalue()


def test_run_usage_errors_without_server() -> None:
    assert _run(["--version"]) == (
        0,
        f"etcdctl version: 3.4.23\nAPI version: 2\nfastkv version: {fastkv.__version__}\n",
        "",
    )
    assert _run(["nope"]) == (3, "", "No help topic for 'nope'\n")
    code, out, err = _run(["get", "--bogus", "/k"])
    assert code == 1 and out.startswith("Incorrect Usage: flag provided but not defined: -bogus\n\nNAME:")
    assert err == "flag provided but not defined: -bogus\n"
    code, out, err = _run(["--timeout", "1", "get"])
    assert code == 1 and out.startswith(
        'Incorrect Usage. invalid value "1" for flag -timeout: parse error\n\n'
    )
    assert _run(["--endpoints", "127.0.0.1:1", "get", "/k"]) == (
        1,
        "",
        'parse "127.0.0.1:1": first path segment in URL cannot contain colon\n',
    )
    assert _run(["member", "list", "x"]) == (1, "", "No arguments accepted\n")
