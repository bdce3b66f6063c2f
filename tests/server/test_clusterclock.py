"""Cluster time with injected wall and monotonic clocks (server/clusterclock.py)."""

from __future__ import annotations

from fastkv.server.clusterclock import ClusterClock

S = 1_000_000_000
T0 = 1_800_000_000 * S  # a wall-clock reading, unix ns
HOUR = 3600 * S


class Clocks:
    """A wall clock and a monotonic clock that tests move by hand."""

    def __init__(self, wall: int = T0, mono: int = 5 * S) -> None:
        self.w = wall
        self.m = mono

    def wall(self) -> int:
        return self.w

    def mono(self) -> int:
        return self.m

    def elapse(self, ns: int) -> None:
        self.w += ns
        self.m += ns

    def clock(self, last_stamp_ns: int = 0) -> ClusterClock:
        return ClusterClock(last_stamp_ns, wall=self.wall, mono=self.mono)


def test_a_new_member_starts_at_its_wall_clock_then_follows_its_monotonic_clock() -> None:
    c = Clocks()
    clock = c.clock()
    assert clock.now() == T0 and not clock.anchored
    c.elapse(3 * S)
    assert clock.now() == T0 + 3 * S
    c.elapse(S)
    c.w += 2 * HOUR  # the wall clock jumps: cluster time does not
    assert clock.now() == T0 + 4 * S
    assert clock.skew_ns() == 2 * HOUR
    c.w -= 5 * HOUR  # nor when it jumps back
    assert clock.now() == T0 + 4 * S


def test_a_restart_starts_at_the_later_of_the_last_stamp_and_the_wall_clock() -> None:
    c = Clocks()
    # Down for an hour: the wall clock is the only witness, keys due meanwhile expire.
    assert c.clock(last_stamp_ns=T0 - HOUR).now() == T0
    # A wall clock behind the applied state never takes time back.
    assert c.clock(last_stamp_ns=T0 + 10 * S).now() == T0 + 10 * S


def test_stamps_are_lower_bounds() -> None:
    c = Clocks()
    clock = c.clock()
    clock.lead()
    clock.observe(T0 - S)  # a stamp made a commit latency ago
    assert clock.now() == T0
    clock.observe(T0 + 2 * S)  # the leader's clock runs ahead of ours: catch up
    assert clock.now() == T0 + 2 * S
    c.elapse(S)
    assert clock.now() == T0 + 3 * S


def test_an_unanchored_clock_takes_the_leaders_time_even_backwards_once() -> None:
    c = Clocks(wall=T0 + 2 * HOUR)  # restarted with a wall clock two hours ahead
    clock = c.clock(last_stamp_ns=T0 - HOUR)
    assert clock.now() == T0 + 2 * HOUR
    clock.follow(T0)  # the live leader's stamp
    assert clock.anchored and clock.now() == T0
    assert clock.skew_ns() == 2 * HOUR
    c.elapse(S)
    clock.follow(T0 + S // 2)  # a later stamp made a commit latency ago: no step back
    assert clock.now() == T0 + S
    clock.follow(T0 + 2 * S)
    assert clock.now() == T0 + 2 * S


def test_a_leader_is_anchored_and_keeps_its_time() -> None:
    c = Clocks()
    clock = c.clock()
    clock.lead()
    clock.follow(T0 - HOUR)  # an old stamp after stepping down changes nothing
    assert clock.now() == T0


def test_skew_warnings_are_rate_limited() -> None:
    c = Clocks()
    clock = c.clock()
    assert clock.skew_warning() is None  # in line
    c.w += 2 * HOUR
    assert clock.skew_warning() == 2 * HOUR
    c.elapse(10 * S)
    assert clock.skew_warning() is None  # the same skew, said 10 s ago
    c.w += 5 * S
    assert clock.skew_warning() == 2 * HOUR + 5 * S  # it changed by more than the threshold
    c.elapse(60 * S)
    assert clock.skew_warning() == 2 * HOUR + 5 * S  # again after the interval
    c.w -= 2 * HOUR + 5 * S
    assert clock.skew_warning() is None  # back in line
    c.w += 2 * HOUR + 5 * S
    c.elapse(S)
    assert clock.skew_warning() == 2 * HOUR + 5 * S  # a new excursion is news at once
    c.w = clock.now() - 3 * S  # behind
    assert clock.skew_warning() == -3 * S
    assert clock.skew_warning(threshold_ns=5 * S) is None
