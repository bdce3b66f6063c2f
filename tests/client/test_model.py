"""Typed results and errors, and the at-most-once rule of the failover, without a server."""

from __future__ import annotations

import orjson
import pytest

from fastkv.client import (
    CompareFailed,
    EtcdError,
    EventIndexCleared,
    InvalidRequest,
    KeyNotFound,
    LeaderStats,
    NodeExists,
    NotADirectory,
    NotAFile,
    OutcomeUnknown,
    SelfStats,
    StoreStats,
    core,
)
from fastkv.client.model import ClusterError


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (100, KeyNotFound),
        (101, CompareFailed),
        (102, NotAFile),
        (104, NotADirectory),
        (105, NodeExists),
        (209, InvalidRequest),
        (401, EventIndexCleared),
        (999, EtcdError),
    ],
)
def test_error_bodies_become_the_subclass_for_their_code(code: int, cls: type[EtcdError]) -> None:
    body = orjson.dumps({"errorCode": code, "message": "m", "cause": "/k", "index": 7})
    err = core.error_from(404, body)
    assert type(err) is cls and isinstance(err, EtcdError)
    assert (err.code, err.cause, err.index, str(err)) == (code, "/k", 7, f"{code}: m (/k) [7]")


def test_stats_and_version_and_health_parse() -> None:
    self_body = orjson.dumps(
        {
            "name": "m0",
            "id": "8e9e05c52164694d",
            "state": "StateLeader",
            "startTime": "2026-01-01T00:00:00Z",
            "leaderInfo": {"leader": "8e9e05c52164694d", "uptime": "4.2s", "startTime": "t"},
            "recvAppendRequestCnt": 3,
            "sendAppendRequestCnt": 9,
            "sendPkgRate": 1.5,
        }
    )
    s = core.self_stats_call().parse(200, {}, self_body)
    assert isinstance(s, SelfStats) and s.is_leader and s.leader_info.uptime == "4.2s"
    assert (s.send_append_request_cnt, s.send_pkg_rate, s.recv_pkg_rate) == (9, 1.5, 0.0)
    leader_body = orjson.dumps(
        {
            "leader": "a",
            "followers": {
                "b": {
                    "latency": {
                        "current": 0.5,
                        "average": 0.4,
                        "standardDeviation": 0.1,
                        "minimum": 0.2,
                        "maximum": 1,
                    },
                    "counts": {"fail": 1, "success": 20},
                }
            },
        }
    )
    ls = core.leader_stats_call().parse(200, {}, leader_body)
    assert (
        isinstance(ls, LeaderStats)
        and ls.followers["b"].latency_maximum == 1.0
        and ls.followers["b"].fail == 1
    )
    st = core.store_stats_call().parse(200, {}, orjson.dumps({"setsSuccess": 4, "watchers": 2}))
    assert isinstance(st, StoreStats) and (st.sets_success, st.watchers, st.gets_fail) == (4, 2, 0)
    v = core.version_call().parse(200, {}, b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}')
    assert (v.server, v.cluster) == ("3.4.23", "3.4.0")
    assert core.health_call().parse(200, {}, b'{"health":"true"}').healthy
    h = core.health_call().parse(503, {}, b'{"health":"false"}\n')
    assert (h.healthy, h.status, bool(h)) == (False, 503, False)
    with pytest.raises(Exception, match="not current leader"):
        core.leader_stats_call().parse(403, {}, b'{"message":"not current leader"}')


def _drive(call: core.Call[object], outcomes: list[object]) -> tuple[list[str], object]:
    failover = core.Failover(["http://a:1", "http://b:2", "http://c:3"])
    attempts = core.failover_attempts(failover, call, None)
    tried = [next(attempts).url]
    try:
        for outcome in outcomes:
            tried.append(attempts.send(outcome).url)  # type: ignore[arg-type]
    except StopIteration as done:
        return tried, done.value
    except Exception as exc:  # noqa: BLE001 - the result under test
        return tried, exc
    raise AssertionError("not finished")


def test_at_most_once_does_not_retry_after_the_request_may_have_landed() -> None:
    ok = (
        201,
        {},
        b'{"action":"create","node":{"key":"/q/1","value":"v","modifiedIndex":5,"createdIndex":5}}',
    )
    post = core.create_in_order_call("/q", "v")
    # Plain: a reset connection moves on to the next endpoint, which applies it (maybe a second time).
    tried, result = _drive(post, [ConnectionResetError(), ok])
    assert tried == ["http://a:1", "http://b:2"] and result.node.key == "/q/1"  # type: ignore[attr-defined]
    once = core.at_most_once(post)
    tried, result = _drive(once, [ConnectionResetError()])
    assert tried == ["http://a:1"] and isinstance(result, OutcomeUnknown)
    tried, result = _drive(once, [(500, {}, b'{"errorCode":300}')])
    assert isinstance(result, OutcomeUnknown) and "has no leader" in str(result)
    # Not sent at all (refused, or connecting failed): safe to try the next member.
    tried, result = _drive(once, [ConnectionRefusedError(), core.NotSent("connect timed out"), ok])
    assert tried == ["http://a:1", "http://b:2", "http://c:3"] and result.node.created_index == 5  # type: ignore[attr-defined]
    tried, result = _drive(
        once, [ConnectionRefusedError(), ConnectionRefusedError(), ConnectionRefusedError()]
    )
    assert isinstance(result, ClusterError)


def test_watch_timeout_is_no_event() -> None:
    tried, result = _drive(core.watch_call("/k", 3, timeout=0.5), [TimeoutError()])
    assert tried == ["http://a:1"] and result is None
