"""parse_config against etcd 3.4's command line, environment and config-file behaviour.

The expected texts were taken from a real etcd 3.4.23; the ``etcd``-marked tests re-check the
error cases against the installed binary (they fail before etcd binds anything).
"""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from fastkv.server.config import (
    HELP,
    USAGE,
    Config,
    ConfigError,
    parse_config,
    parse_initial_cluster,
    parse_url,
    parse_urls,
    url_host_port,
    version_text,
)
from fastkv.server.identity import cluster_id_for, format_id, member_id_for
from tests.support.procs import have_etcd

PEER = "http://127.0.0.1:22380"
CLIENT = "http://127.0.0.1:22379"


@pytest.fixture(autouse=True)
def _empty_working_dir(tmp_path, monkeypatch) -> None:
    """Every test parses in an empty working directory: without --data-dir the data dir is
    ./<name>.fastkv, and whether it holds a WAL decides what the initial-cluster flags mean, so a
    ./default.fastkv left in the checkout by `make run` must not leak into the results."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data_dir(tmp_path) -> str:
    return str(tmp_path / "data")


def base(data_dir: str, name: str = "default") -> list[str]:
    """A complete single-member command line, like tests.support.procs builds."""
    return [
        "--name", name, "--data-dir", data_dir,
        "--listen-client-urls", CLIENT, "--advertise-client-urls", CLIENT,
        "--listen-peer-urls", PEER, "--initial-advertise-peer-urls", PEER,
        "--initial-cluster", f"{name}={PEER}",
    ]  # fmt: skip


def error_of(argv: list[str], environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(argv, environ or {})
    return info.value


def lines(cfg: Config, level: int) -> list[str]:
    return [str(line) for line in cfg.log_lines if line.level == level]


# --- identity (§3.3) -------------------------------------------------------------------------


def test_member_and_cluster_id_match_the_spec_examples():
    member = member_id_for(["http://127.0.0.1:42380"], "tok1")
    assert format_id(member) == "32689cdaa5c21add"
    assert format_id(cluster_id_for([member])) == "c1fbc22789d8c638"


def test_default_member_id_matches_a_default_etcd():
    # Logged by `etcd` with no flags: "starting member 8e9e05c52164694d in cluster cdf818194e3a8c32".
    member = member_id_for(["http://localhost:2380"], "etcd-cluster")
    assert (format_id(member), format_id(cluster_id_for([member]))) == (
        "8e9e05c52164694d",
        "cdf818194e3a8c32",
    )


def test_ids_ignore_order_and_runtime_ids_are_salted_with_time():
    urls = ["http://b:2", "http://a:1"]
    assert member_id_for(urls, "t") == member_id_for(list(reversed(urls)), "t")
    assert cluster_id_for([3, 1, 2]) == cluster_id_for([1, 2, 3])
    assert member_id_for(urls, "", now_s=1) != member_id_for(urls, "", now_s=2)
    assert format_id(0x0ABC) == "abc"


# --- defaults --------------------------------------------------------------------------------


def test_defaults_are_etcd_34s(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config([], {})
    assert cfg.name == "default"
    assert cfg.data_dir == "default.fastkv"
    assert lines(cfg, logging.WARNING) == ["no data-dir provided, using default data-dir ./default.fastkv"]
    assert cfg.wal_dir == ""
    assert cfg.snapshot_count == 100000
    assert (cfg.heartbeat_interval_ms, cfg.election_timeout_ms) == (100, 1000)
    assert cfg.listen_client_urls == ["http://localhost:2379"]
    assert cfg.advertise_client_urls == ["http://localhost:2379"]
    assert cfg.listen_peer_urls == ["http://localhost:2380"]
    assert cfg.initial_advertise_peer_urls == ["http://localhost:2380"]
    assert cfg.initial_cluster == [("default", "http://localhost:2380")]
    assert cfg.initial_cluster_token == "etcd-cluster"
    assert cfg.initial_cluster_state == "new"
    assert cfg.cors == {"*"}  # a plain etcd answers Access-Control-Allow-Origin: *
    assert (cfg.max_snapshots, cfg.max_wals) == (5, 5)
    assert cfg.strict_reconfig_check is True
    assert cfg.force_new_cluster is False
    assert cfg.enable_v2 is True  # etcd 3.4: false; fastkv serves v2 unless told not to
    assert (cfg.log_level, cfg.debug, cfg.enable_pprof, cfg.metrics) == ("info", False, False, "basic")
    assert (cfg.discovery, cfg.discovery_srv, cfg.discovery_fallback) == ("", "", "proxy")
    assert not cfg.show_help and not cfg.show_version


def test_data_dir_default_follows_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(["--name", "n1"], {})
    assert cfg.data_dir == "n1.fastkv"
    # etcd's UpdateDefaultClusterFromName: an unset initial cluster follows the name.
    assert cfg.initial_cluster == [("n1", "http://localhost:2380")]


def test_unset_initial_cluster_uses_every_advertised_peer_url(data_dir):
    cfg = parse_config(
        ["--data-dir", data_dir, "--initial-advertise-peer-urls", "http://127.0.0.1:2,http://127.0.0.1:1"], {}
    )
    assert cfg.initial_cluster == [("default", "http://127.0.0.1:1"), ("default", "http://127.0.0.1:2")]


def test_full_command_line(data_dir):
    cfg = parse_config(
        base(data_dir, "n1") + ["--snapshot-count", "500", "--debug", "--cors", "http://a:1"], {}
    )
    assert cfg.name == "n1" and cfg.data_dir == data_dir
    assert cfg.listen_client_urls == cfg.advertise_client_urls == [CLIENT]
    assert cfg.initial_cluster == [("n1", PEER)]
    assert cfg.snapshot_count == 500
    assert cfg.debug and cfg.log_level == "debug"
    assert cfg.cors == {"http://a:1"}
    assert cfg.log_lines == []
    assert {"name", "data-dir", "snapshot-count", "debug", "cors"} <= cfg.explicit


# --- Go flag syntax --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["-name", "x"], ["--name", "x"], ["-name=x"], ["--name=x"]],
)
def test_flag_forms(argv, data_dir):
    assert parse_config(argv + ["--data-dir", data_dir], {}).name == "x"


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("--force-new-cluster", True),
        ("-force-new-cluster", True),
        ("--force-new-cluster=true", True),
        ("--force-new-cluster=1", True),
        ("--force-new-cluster=T", True),
        ("--force-new-cluster=TRUE", True),
        ("--force-new-cluster=True", True),
        ("--force-new-cluster=false", False),
        ("--force-new-cluster=0", False),
        ("--force-new-cluster=F", False),
    ],
)
def test_boolean_syntax_is_parsebool(arg, value, data_dir):
    assert parse_config([arg, "--data-dir", data_dir], {}).force_new_cluster is value


def test_boolean_with_bad_value_is_a_syntax_error():
    e = error_of(["--enable-v2=maybe"])
    assert (str(e), e.exit_code) == ('invalid boolean value "maybe" for -enable-v2: parse error', 2)
    assert e.details == USAGE
    assert str(error_of(["--debug=yes"])) == 'invalid boolean value "yes" for -debug: parse error'
    assert str(error_of(["--debug="])) == 'invalid boolean value "" for -debug: parse error'


def test_boolean_does_not_take_the_next_argument():
    # `--debug false` sets debug and leaves "false" as a stray argument.
    e = error_of(["--debug", "false"])
    assert (str(e), e.exit_code) == (
        "error verifying flags, 'false' is not a valid flag. See 'fastkv --help'.",
        1,
    )


def test_value_flag_takes_the_next_argument_whatever_it_looks_like(data_dir):
    cfg = parse_config(["--data-dir", data_dir, "--initial-cluster-token", "--debug"], {})
    assert cfg.initial_cluster_token == "--debug" and not cfg.debug


def test_last_occurrence_wins(data_dir):
    assert parse_config(["--name=a", "--name=b", "--data-dir", data_dir], {}).name == "b"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "flag provided but not defined: -bogus"),
        (["-bogus=1"], "flag provided but not defined: -bogus"),
        (["--name"], "flag needs an argument: -name"),
        (["-name=x", "--snapshot-count"], "flag needs an argument: -snapshot-count"),
        (["---name=x"], "bad flag syntax: ---name=x"),
        (["-=x"], "bad flag syntax: -=x"),
        (["--snapshot-count=abc"], 'invalid value "abc" for flag -snapshot-count: parse error'),
        (["--snapshot-count=+5"], 'invalid value "+5" for flag -snapshot-count: parse error'),
        (
            ["--snapshot-count=99999999999999999999"],
            'invalid value "99999999999999999999" for flag -snapshot-count: value out of range',
        ),
        (["--heartbeat-interval=-5"], 'invalid value "-5" for flag -heartbeat-interval: parse error'),
        (["--election-timeout", "1e3"], 'invalid value "1e3" for flag -election-timeout: parse error'),
        (
            ["--initial-cluster-state=bogus"],
            'invalid value "bogus" for flag -initial-cluster-state: invalid value',
        ),
        (["--discovery-fallback=bogus"], 'invalid value "bogus" for flag -discovery-fallback: invalid value'),
        (["--proxy=bogus"], 'invalid value "bogus" for flag -proxy: invalid value'),
        (["--backend-batch-interval=5"], 'invalid value "5" for flag -backend-batch-interval: parse error'),
        (
            ["--max-concurrent-streams=-1"],
            'invalid value "-1" for flag -max-concurrent-streams: strconv.ParseUint: parsing "-1": invalid syntax',
        ),
        (
            ["--listen-client-urls=ftp://127.0.0.1:1"],
            'invalid value "ftp://127.0.0.1:1" for flag -listen-client-urls: '
            "URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:1",
        ),
        (
            ["--listen-client-urls=http://127.0.0.1"],
            'invalid value "http://127.0.0.1" for flag -listen-client-urls: '
            'URL address does not have the form "host:port": http://127.0.0.1',
        ),
        (
            ["--listen-client-urls=http://127.0.0.1:1/path"],
            'invalid value "http://127.0.0.1:1/path" for flag -listen-client-urls: '
            "URL must not contain a path: http://127.0.0.1:1/path",
        ),
        (
            ["--listen-client-urls=127.0.0.1:1"],
            'invalid value "127.0.0.1:1" for flag -listen-client-urls: '
            'parse "127.0.0.1:1": first path segment in URL cannot contain colon',
        ),
        (
            ["--cors=http://a.com"],
            'invalid value "http://a.com" for flag -cors: URL address does not have the form "host:port": http://a.com',
        ),
        (["--cors="], 'invalid value "" for flag -cors: URL scheme must be http, https, unix, or unixs: '),
    ],
)
def test_command_line_errors_exit_2_with_go_flag_texts(argv, message):
    e = error_of(argv)
    assert (str(e), e.message, e.exit_code, e.details) == (message, message, 2, USAGE)


def test_go_integer_syntax(data_dir):
    for raw, value in (("0x10", 16), ("010", 8), ("0o10", 8), ("0b11", 3), ("1_000", 1000), ("0", 0)):
        assert parse_config(["--snapshot-count", raw, "--data-dir", data_dir], {}).snapshot_count == value


def test_stray_arguments_are_rejected_but_double_dash_ends_flags(data_dir):
    e = error_of(["positional"])
    assert (e.message, e.exit_code) == ("'positional' is not a valid flag", 1)
    assert error_of(["-"]).message == "'-' is not a valid flag"
    assert error_of(["--name=a", "--", "x"]).message == "'x' is not a valid flag"
    assert (
        parse_config(
            [
                "--data-dir",
                data_dir,
                "--",
            ],
            {},
        ).name
        == "default"
    )


def test_help_and_version_short_circuit(data_dir):
    for argv in (["-h"], ["--help"], ["-help"], ["--name=x", "--help", "--bogus"], ["--help=whatever"]):
        cfg = parse_config(argv, {"ETCD_NAME": "ignored"})
        assert cfg.show_help and cfg.output_text == HELP
    assert "--initial-cluster-token" in HELP and "--data-dir '${name}.fastkv'" in HELP
    # Errors before -h still count, as in Go.
    assert error_of(["--bogus", "-h"]).exit_code == 2
    for argv in (["--version"], ["-version"], ["--version=true"]):
        cfg = parse_config(argv + ["--election-timeout=1"], {})
        assert cfg.show_version and cfg.output_text == version_text()
    text = version_text()
    assert text.startswith("fastkv Version: ") and "\netcd API Version: 3.4.23\n" in text
    assert "\nPython Version: " in text and "\nOS/Arch: " in text and text.endswith("\n")
    assert not parse_config(["--version=false", "--data-dir", data_dir], {}).show_version


def test_etcd_only_flags_are_accepted_and_noted(data_dir):
    cfg = parse_config(
        [
            "--data-dir", data_dir, "--quota-backend-bytes=-5", "--grpc-keepalive-min-time=10s",
            "--auto-compaction-retention=1h", "--pre-vote", "--experimental-enable-v2v3=/v2",
            "--max-txn-ops=10", "--log-outputs=stderr", "--enable-grpc-gateway=false", "--unsafe-no-fsync",
        ],
        {},
    )  # fmt: skip
    debug = lines(cfg, logging.DEBUG)
    assert "--quota-backend-bytes is accepted for etcd compatibility and ignored" in debug
    assert "--pre-vote is accepted for etcd compatibility and ignored" in debug
    assert len(debug) == 8


def test_etcd_04_flags_are_swallowed_with_a_warning(data_dir):
    cfg = parse_config(["--data-dir", data_dir, "--snapshot=1", "--vv", "-peer-heartbeat-interval"], {})
    assert lines(cfg, logging.WARNING) == [
        'flag "-snapshot" is no longer supported - ignoring.',
        'flag "-vv" is no longer supported - ignoring.',
        'flag "-peer-heartbeat-interval" is no longer supported - ignoring.',
    ]
    # They are boolean-like: a separate value is a stray argument.
    assert error_of(["--snapshot", "x"]).message == "'x' is not a valid flag"
    # etcd 3.4.23 rejects the etcd 2.x address flags.
    assert error_of(["-addr=127.0.0.1:4001"]).message == "flag provided but not defined: -addr"


# --- environment -----------------------------------------------------------------------------


def test_environment_fills_unset_flags_and_is_logged(data_dir):
    env = {"ETCD_NAME": "n2", "ETCD_DEBUG": "true", "ETCD_SNAPSHOT_COUNT": "7", "ETCD_DATA_DIR": data_dir}
    cfg = parse_config([], env)
    assert (cfg.name, cfg.debug, cfg.snapshot_count, cfg.data_dir) == ("n2", True, 7, data_dir)
    # In flag-name order, as Go's VisitAll walks them.
    assert lines(cfg, logging.INFO) == [
        f"recognized and used environment variable ETCD_DATA_DIR={data_dir}",
        "recognized and used environment variable ETCD_DEBUG=true",
        "recognized and used environment variable ETCD_NAME=n2",
        "recognized and used environment variable ETCD_SNAPSHOT_COUNT=7",
    ]
    assert {"name", "debug", "snapshot-count", "data-dir"} <= cfg.explicit


def test_environment_url_lists_and_listen_without_advertise():
    e = error_of([], {"ETCD_LISTEN_CLIENT_URLS": CLIENT})
    assert e.message == "--advertise-client-urls is required when --listen-client-urls is set explicitly"


def test_unknown_environment_variables_are_warned_about(data_dir):
    env = {"ETCD_BOGUS": "1", "ETCDCTL_API": "2", "HOME": "/root", "ETCD_VERSION": ""}
    cfg = parse_config(["--data-dir", data_dir], env)
    # Empty values are not used, so even a known name is reported as unrecognized (as etcd does).
    assert lines(cfg, logging.WARNING) == [
        "unrecognized environment variable ETCD_BOGUS=1",
        "unrecognized environment variable ETCD_VERSION=",
    ]


def test_flag_and_environment_together_is_fatal():
    message = (
        'conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag '
        "(either unset environment variable or disable flag)"
    )
    for value in ("x", ""):
        e = error_of(["--name", "y"], {"ETCD_NAME": value})
        assert (str(e), e.exit_code) == (message, 1)


def test_bad_environment_value_reports_the_last_one():
    e = error_of([], {"ETCD_SNAPSHOT_COUNT": "abc", "ETCD_BOGUS": "1"})
    assert (str(e), e.exit_code) == (
        "error verifying flags, invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: parse error. See 'fastkv --help'.",
        1,
    )
    e = error_of([], {"ETCD_ENABLE_V2": "maybe", "ETCD_LISTEN_CLIENT_URLS": "ftp://x:1"})
    assert e.message == (
        'invalid value "ftp://x:1" for ETCD_LISTEN_CLIENT_URLS: URL scheme must be http, https, unix, or unixs: ftp://x:1'
    )


def test_ignored_flag_from_environment(data_dir):
    cfg = parse_config(["--data-dir", data_dir], {"ETCD_SNAPSHOT": "x"})
    assert [str(line) for line in cfg.log_lines] == [
        'flag "-snapshot" is no longer supported - ignoring.',
        "recognized and used environment variable ETCD_SNAPSHOT=x",
    ]


# --- config file -----------------------------------------------------------------------------


def write(tmp_path, text: str) -> str:
    path = tmp_path / "fastkv.conf.yml"
    path.write_text(text)
    return str(path)


def test_config_file_replaces_flags_and_environment(tmp_path, data_dir):
    path = write(
        tmp_path,
        f"name: n1\ndata-dir: {data_dir}\nsnapshot-count: 42\nlisten-client-urls: {CLIENT}\n"
        f"advertise-client-urls: {CLIENT}\ninitial-advertise-peer-urls: {PEER}\nlisten-peer-urls: {PEER}\n"
        f"initial-cluster: n1={PEER}\nbogus-key: 1\nenable-v2: yes\ncors: http://a:1,http://b:2\n"
        "client-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: true\n"
        "peer-transport-security:\n  key-file: /k.pem\n",
    )
    cfg = parse_config(
        ["--config-file", path, "--name", "ignored"], {"ETCD_NAME": "ignored", "ETCD_BOGUS": "1"}
    )
    assert (cfg.name, cfg.data_dir, cfg.snapshot_count, cfg.enable_v2) == ("n1", data_dir, 42, True)
    assert cfg.listen_client_urls == [CLIENT] and cfg.initial_cluster == [("n1", PEER)]
    assert cfg.cors == {"http://a:1", "http://b:2"}
    assert (cfg.cert_file, cfg.client_cert_auth, cfg.peer_key_file) == ("/c.pem", True, "/k.pem")
    assert cfg.config_file == path
    assert [str(line) for line in cfg.log_lines] == [
        f'Loading server configuration from "{path}". Other configuration command line flags and '
        "environment variables will be ignored if provided."
    ]


def test_config_file_from_environment_and_file_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "name: n1\nlisten-client-urls: http://127.0.0.1:22379\n")
    cfg = parse_config([], {"ETCD_CONFIG_FILE": path, "ETCD_SNAPSHOT_COUNT": "abc"})
    # In a file, listen URLs alone keep the default advertise URL (etcd starts this way).
    assert cfg.advertise_client_urls == ["http://localhost:2379"]
    assert cfg.data_dir == "n1.fastkv"
    assert cfg.initial_cluster == [("n1", "http://localhost:2380")]
    assert cfg.snapshot_count == 100000
    empty = write(tmp_path, "")
    assert parse_config(["--config-file", empty], {}).name == "default"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed\n", "error converting YAML to JSON: yaml: line "),
        (
            "snapshot-count: abc\n",
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string into Go struct field "
            "configYAML.snapshot-count of type uint64",
        ),
        (
            "snapshot-count: -1\n",
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal number -1 into Go struct "
            "field configYAML.snapshot-count of type uint64",
        ),
        (
            "enable-v2: 3\n",
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal number 3 into Go struct "
            "field configYAML.enable-v2 of type bool",
        ),
        (
            "- a\n- b\n",
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal array into Go value of type "
            "embed.configYAML",
        ),
        (
            "election-timeout: 400\n",
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]",
        ),
        ("initial-cluster-state: bogus\n", 'unexpected clusterState "bogus"'),
    ],
)
def test_config_file_errors(tmp_path, text, message):
    e = error_of(["--config-file", write(tmp_path, text)])
    assert e.message.startswith(message) and e.exit_code == 1
    assert str(e) == f"error verifying flags, {e.message}. See 'fastkv --help'."


def test_config_file_url_and_open_errors(tmp_path):
    e = error_of(["--config-file", write(tmp_path, "listen-client-urls: ftp://x:1\n")])
    assert (
        str(e)
        == "unexpected error setting up listen-client-urls: URL scheme must be http, https, unix, or unixs: ftp://x:1"
    )
    e = error_of(["--config-file", "/nonexistent/fastkv.yml"])
    assert e.message == "open /nonexistent/fastkv.yml: no such file or directory"


# --- validation (§3.1) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--election-timeout=400"],
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]",
        ),
        (
            ["--election-timeout=50001"],
            "--election-timeout[50001ms] is too long, and should be set less than 50000ms",
        ),
        (["--heartbeat-interval=0"], "--heartbeat-interval must be >0 (set to 0ms)"),
        (["--heartbeat-interval=0", "--election-timeout=0"], "--heartbeat-interval must be >0 (set to 0ms)"),
        (
            ["--discovery=http://127.0.0.1:1/t"],
            'multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", "discovery" or "discovery-srv"',
        ),
        (
            ["--discovery-srv=example.com"],
            'multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", "discovery" or "discovery-srv"',
        ),
        (["--listen-peer-urls=http://foo.com:1"], "expected IP in URL for binding (http://foo.com:1)"),
        (
            ["--advertise-client-urls=http://:1"],
            '--advertise-client-urls "http://:1" must be "host:port" (unexpected empty host (http://:1))',
        ),
        (["--logger=bogus"], 'unknown logger option "bogus"'),
        (["--log-level=bogus"], 'unknown level "bogus"'),
        (["--auto-compaction-mode=bogus"], 'unknown auto-compaction-mode "bogus"'),
    ],
)
def test_validation_errors(extra, message, data_dir):
    e = error_of(base(data_dir) + extra)
    assert (e.message, e.exit_code) == (message, 1)
    assert str(e) == f"error verifying flags, {message}. See 'fastkv --help'."


def test_listen_client_urls_need_advertise_urls_unless_proxying(data_dir):
    e = error_of(["--listen-client-urls", CLIENT, "--data-dir", data_dir])
    assert e.message == "--advertise-client-urls is required when --listen-client-urls is set explicitly"
    assert "must advertise accessible url(s)" in e.details
    cfg = parse_config(["--listen-client-urls", CLIENT, "--data-dir", data_dir, "--proxy=on"], {})
    assert cfg.advertise_client_urls == ["http://localhost:2379"]


def test_discovery_replaces_the_default_initial_cluster(data_dir):
    cfg = parse_config(["--data-dir", data_dir, "--discovery", "http://127.0.0.1:1/v2/keys/t"], {})
    assert cfg.initial_cluster == [] and cfg.discovery == "http://127.0.0.1:1/v2/keys/t"
    assert cfg.initial_cluster_token_for_ids() == cfg.discovery


def test_localhost_and_unix_are_valid_bind_addresses(data_dir):
    cfg = parse_config(
        base(data_dir)
        + ["--listen-peer-urls", "http://localhost:22380,unix://sock:1", "--listen-metrics-urls", CLIENT],
        {},
    )
    assert cfg.listen_peer_urls == ["http://localhost:22380", "unix://sock:1"]
    assert cfg.listen_metrics_urls == [CLIENT]


# --- bootstrap checks (§4.1) -----------------------------------------------------------------


def test_name_missing_from_initial_cluster(data_dir):
    e = error_of(["--data-dir", data_dir, "--name=q", "--initial-cluster=x=http://127.0.0.1:1"])
    assert (str(e), e.exit_code) == ('couldn\'t find local name "q" in the initial cluster configuration', 1)
    assert error_of(["--data-dir", data_dir, "--initial-cluster="]).message == (
        'couldn\'t find local name "default" in the initial cluster configuration'
    )


def test_advertised_peer_urls_must_match_the_initial_cluster(data_dir):
    e = error_of(["--data-dir", data_dir, f"--initial-cluster=default={PEER},x=http://127.0.0.1:9"])
    assert str(e) == (
        f"--initial-cluster has default={PEER} but missing from --initial-advertise-peer-urls="
        f'http://localhost:2380 (resolved urls: "http://localhost:2380" != "{PEER}")'
    )
    e = error_of(
        ["--data-dir", data_dir, "--initial-advertise-peer-urls", PEER,
         f"--initial-cluster=default={PEER},default=http://127.0.0.1:9"]
    )  # fmt: skip
    assert str(e) == (
        f"--initial-cluster has default=http://127.0.0.1:9 but missing from --initial-advertise-peer-urls={PEER} "
        f'(len(["{PEER}"]) != len(["{PEER}" "http://127.0.0.1:9"]))'
    )
    e = error_of(
        ["--data-dir", data_dir, "--initial-advertise-peer-urls", f"{PEER},http://127.0.0.1:9",
         f"--initial-cluster=default={PEER}"]
    )  # fmt: skip
    assert str(e) == (
        f"--initial-advertise-peer-urls has http://127.0.0.1:9 but missing from "
        f"--initial-cluster=default={PEER},default=http://127.0.0.1:9"
    )


def test_initial_cluster_with_duplicate_url(data_dir):
    e = error_of(base(data_dir)[:-2] + ["--initial-cluster", f"default={PEER},b={PEER}"])
    assert str(e) == f"initial cluster b={PEER},default={PEER} has duplicate url"


def test_bad_initial_cluster(data_dir):
    e = error_of(["--data-dir", data_dir, "--initial-cluster=default=foo"])
    assert str(e) == "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: foo"
    e = error_of(["--data-dir", data_dir, "--initial-cluster=default"])
    assert str(e) == "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: "


def test_initial_flags_are_ignored_once_a_wal_exists(data_dir):
    wal = os.path.join(data_dir, "member", "wal")
    os.makedirs(wal)
    assert error_of(["--data-dir", data_dir, "--name=q"] + ["--initial-cluster=x=http://127.0.0.1:1"])
    open(os.path.join(wal, "0000000000000000-0000000000000000.wal"), "wb").close()
    cfg = parse_config(["--data-dir", data_dir, "--name=q", "--initial-cluster=x=bogus"], {})
    assert cfg.member_initialized() and cfg.initial_cluster == []
    cfg = parse_config(["--data-dir", data_dir, "--name=q", "--initial-cluster=x=http://127.0.0.1:1"], {})
    assert cfg.initial_cluster == [("x", "http://127.0.0.1:1")]


def test_dedicated_wal_dir_decides_initialization(tmp_path, data_dir):
    wal = tmp_path / "wal"
    wal.mkdir()
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"")
    cfg = parse_config(["--data-dir", data_dir, "--wal-dir", str(wal), "--name=q"], {})
    assert cfg.wal_path == str(wal) and cfg.member_initialized()
    assert parse_config(["--data-dir", data_dir], {}).wal_path == os.path.join(data_dir, "member", "wal")


def test_joining_an_existing_cluster(data_dir):
    cfg = parse_config(base(data_dir) + ["--initial-cluster-state=existing"], {})
    assert cfg.initial_cluster_state == "existing"


# --- URL helpers -----------------------------------------------------------------------------


def test_url_parsing():
    assert parse_url(" HTTP://127.0.0.1:1 ") == "http://127.0.0.1:1"
    assert parse_url("http://[::1]:2379") == "http://[::1]:2379"
    assert parse_urls("http://b:2,http://a:1,http://b:2") == ["http://a:1", "http://b:2"]
    assert url_host_port("http://[::1]:2379") == ("http", "::1", 2379)
    assert url_host_port("unix://localhost:1234") == ("unix", "localhost", 1234)
    with pytest.raises(ValueError, match="invalid port"):
        parse_url("http://h:abc")
    with pytest.raises(ValueError, match="URL scheme must be"):
        parse_url("localhost:2379")
    assert parse_initial_cluster("a=http://h:1,,b=http://h:2,a=http://h:3") == [
        ("a", "http://h:1"),
        ("b", "http://h:2"),
        ("a", "http://h:3"),
    ]


# --- the real etcd as oracle -----------------------------------------------------------------

ORACLE_CASES = [
    (["--bogus"], {}),
    (["--snapshot-count=abc"], {}),
    (["--name"], {}),
    (["--enable-v2=maybe"], {}),
    (["---name=x"], {}),
    (["--initial-cluster-state=bogus"], {}),
    (["--listen-client-urls=http://127.0.0.1"], {}),
    (["--listen-client-urls=127.0.0.1:1"], {}),
    (["--max-concurrent-streams=4294967296"], {}),
    (["positional"], {}),
    (["--election-timeout=400"], {}),
    (["--election-timeout=50001"], {}),
    (["--heartbeat-interval=0"], {}),
    (["--listen-peer-urls=http://foo.com:1"], {}),
    (["--listen-client-urls=http://127.0.0.1:22379"], {}),
    (["--initial-cluster=default=http://localhost:2380", "--discovery=http://127.0.0.1:1/t"], {}),
    (["--name", "y"], {"ETCD_NAME": "x"}),
    ([], {"ETCD_SNAPSHOT_COUNT": "abc"}),
    (["--name=q", "--initial-cluster=x=http://127.0.0.1:1", "--advertise-client-urls=http://127.0.0.1:1",
      "--listen-client-urls=http://127.0.0.1:22379", "--listen-peer-urls=http://127.0.0.1:22380"], {}),
    (["--initial-cluster=default=foo", "--advertise-client-urls=http://127.0.0.1:1",
      "--listen-client-urls=http://127.0.0.1:22379", "--listen-peer-urls=http://127.0.0.1:22380"], {}),
]  # fmt: skip


@pytest.mark.etcd
@pytest.mark.skipif(not have_etcd(), reason="etcd is not installed")
@pytest.mark.parametrize(("argv", "env"), ORACLE_CASES)
def test_errors_match_real_etcd(argv, env):
    e = error_of(argv, env)
    # etcd runs in the same (empty) working directory the parse above saw.
    proc = subprocess.run(
        ["etcd", *argv],
        env={"PATH": os.environ["PATH"], **env},
        cwd=os.getcwd(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == e.exit_code, proc.stderr
    assert e.message in proc.stderr
    if e.exit_code == 2:
        assert proc.stderr.startswith(e.message + "\nUsage:\n")


def test_enable_v2_false_from_flag_environment_and_config_file(tmp_path, data_dir):
    """etcd's --enable-v2 (default true here, false in etcd 3.4): each source can turn v2 off."""
    assert parse_config(["--enable-v2=false"], {}).enable_v2 is False
    assert parse_config(["--enable-v2", "--enable-v2=false"], {}).enable_v2 is False
    assert parse_config([], {"ETCD_ENABLE_V2": "false"}).enable_v2 is False
    path = write(tmp_path, f"name: n1\ndata-dir: {data_dir}\nenable-v2: false\n")
    assert parse_config(["--config-file", path], {}).enable_v2 is False
