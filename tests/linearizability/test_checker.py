"""The linearizability checker against hand-made histories, an exhaustive oracle, and histories
produced by a sequential register with random overlapping intervals."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.linearizability import (
    INFINITY,
    READ,
    WRITE,
    Operation,
    State,
    Verdict,
    cas,
    check,
    read,
    step,
    write,
)

K = "k"


def verdict(*ops: Operation, initial: dict[str, State] | None = None) -> Verdict:
    return check(ops, initial).verdict


# -- single operations and simple sequences -------------------------------------------------------


def test_empty_history_and_read_of_missing_key() -> None:
    assert verdict() is Verdict.OK
    assert verdict(read(K, 0, 1, None)) is Verdict.OK
    assert verdict(read(K, 0, 1, "x")) is Verdict.ILLEGAL
    assert verdict(read(K, 0, 1, "x"), initial={K: "x"}) is Verdict.OK


def test_stale_read_after_a_completed_write_is_illegal() -> None:
    ops = [write(K, 0, 10, "1"), write(K, 20, 30, "2"), read(K, 40, 50, "1")]
    assert verdict(*ops) is Verdict.ILLEGAL
    # The same read overlapping the second write may see either value.
    assert verdict(ops[0], ops[1], read(K, 25, 50, "1")) is Verdict.OK
    assert verdict(ops[0], ops[1], read(K, 25, 50, "2")) is Verdict.OK


def test_lost_write_is_illegal() -> None:
    assert verdict(write(K, 0, 10, "a"), read(K, 20, 30, None)) is Verdict.ILLEGAL
    assert verdict(write(K, 0, 10, "a"), write(K, 11, 12, "b"), read(K, 20, 30, "a")) is Verdict.ILLEGAL


def test_read_of_a_value_never_written_is_illegal() -> None:
    assert verdict(write(K, 0, 10, "a"), read(K, 5, 30, "zzz")) is Verdict.ILLEGAL


def test_concurrent_operations_in_either_order() -> None:
    w = write(K, 0, 10, "a")
    assert verdict(w, read(K, 5, 15, None)) is Verdict.OK
    assert verdict(w, read(K, 5, 15, "a")) is Verdict.OK
    # Touching intervals overlap: a read called when the write returns may still precede it.
    assert verdict(w, read(K, 10, 15, None)) is Verdict.OK
    assert verdict(w, read(K, 11, 15, None)) is Verdict.ILLEGAL
    # Two overlapping reads agree on one order of two writes, not on both.
    ws = [write(K, 0, 10, "a"), write(K, 0, 10, "b")]
    assert verdict(*ws, read(K, 20, 30, "a")) is Verdict.OK
    assert verdict(*ws, read(K, 20, 30, "b")) is Verdict.OK
    assert verdict(*ws, read(K, 20, 30, "a"), read(K, 40, 50, "b")) is Verdict.ILLEGAL
    # Reads inside the writes' window can see them in either order, but one client cannot see
    # a, b, a unless a is written again.
    seen = [read(K, 1, 2, "a"), read(K, 3, 4, "b"), read(K, 5, 6, "a")]
    assert verdict(*ws, *seen[:2]) is Verdict.OK
    assert verdict(*ws, *seen) is Verdict.ILLEGAL


def test_two_cas_from_the_same_expected_value_cannot_both_succeed() -> None:
    base = write(K, 0, 10, "a")
    c1 = cas(K, 20, 30, "a", "b", ok=True)
    c2 = cas(K, 20, 30, "a", "c", ok=True)
    assert verdict(base, c1) is Verdict.OK
    assert verdict(base, c1, c2) is Verdict.ILLEGAL
    # One of them failing is fine, whichever it is.
    assert verdict(base, c1, cas(K, 20, 30, "a", "c", ok=False)) is Verdict.OK
    assert verdict(base, cas(K, 20, 30, "a", "b", ok=False), c2) is Verdict.OK
    # An ambiguous rewrite of "a" between them explains both successes.
    assert verdict(base, c1, c2, write(K, 15, INFINITY, "a")) is Verdict.OK
    # ... but not when that write was called after both returned.
    assert verdict(base, c1, c2, write(K, 31, INFINITY, "a")) is Verdict.ILLEGAL


def test_failed_cas_is_an_observation_of_a_different_value() -> None:
    base = write(K, 0, 10, "a")
    assert verdict(base, cas(K, 20, 30, "b", "c", ok=False)) is Verdict.OK
    assert verdict(base, cas(K, 20, 30, "a", "c", ok=False)) is Verdict.ILLEGAL
    # cas on a missing key fails (etcd answers 404): never equal to a string.
    assert verdict(cas(K, 0, 1, "a", "b", ok=False)) is Verdict.OK
    assert verdict(cas(K, 0, 1, "a", "b", ok=True)) is Verdict.ILLEGAL
    # A failed cas changes nothing.
    assert verdict(base, cas(K, 20, 30, "x", "c", ok=False), read(K, 40, 50, "c")) is Verdict.ILLEGAL


def test_cas_chain_and_successful_cas_is_visible() -> None:
    ops = [
        write(K, 0, 10, "a"),
        cas(K, 20, 30, "a", "b", ok=True),
        cas(K, 40, 50, "b", "c", ok=True),
        read(K, 60, 70, "c"),
    ]
    assert verdict(*ops) is Verdict.OK
    assert verdict(*ops[:3], read(K, 60, 70, "b")) is Verdict.ILLEGAL


# -- ambiguous operations -------------------------------------------------------------------------


def test_ambiguous_write_may_be_applied_or_not() -> None:
    w = write(K, 0, INFINITY, "x")
    assert verdict(w, read(K, 20, 30, "x")) is Verdict.OK  # must be assumed applied
    assert verdict(w, read(K, 20, 30, None)) is Verdict.OK  # must be assumed not applied
    # It may take effect long after its call (the request was stuck somewhere) ...
    assert verdict(w, read(K, 100, 110, None), read(K, 200, 210, "x")) is Verdict.OK
    # ... but only once.
    assert verdict(w, read(K, 100, 110, "x"), read(K, 200, 210, None)) is Verdict.ILLEGAL
    # ... and never before its call.
    assert verdict(read(K, 0, 10, "x"), write(K, 20, INFINITY, "x")) is Verdict.ILLEGAL


def test_ambiguous_write_can_explain_a_failed_cas() -> None:
    ops = [write(K, 0, 10, "a"), write(K, 15, INFINITY, "z"), cas(K, 20, 30, "a", "b", ok=False)]
    assert verdict(*ops) is Verdict.OK
    assert verdict(ops[0], ops[2]) is Verdict.ILLEGAL


def test_ambiguous_cas_applies_only_when_its_compare_holds() -> None:
    base = write(K, 0, 10, "a")
    assert verdict(base, cas(K, 20, INFINITY, "a", "b", ok=None), read(K, 40, 50, "b")) is Verdict.OK
    assert verdict(base, cas(K, 20, INFINITY, "a", "b", ok=None), read(K, 40, 50, "a")) is Verdict.OK
    # Its compare never holds: it cannot have produced "b".
    assert verdict(base, cas(K, 20, INFINITY, "q", "b", ok=None), read(K, 40, 50, "b")) is Verdict.ILLEGAL


def test_ambiguous_read_constrains_nothing() -> None:
    assert verdict(write(K, 0, 10, "a"), read(K, 20, INFINITY, None)) is Verdict.OK


def test_keys_are_independent() -> None:
    ops = [write("a", 0, 10, "1"), write("b", 0, 10, "2"), read("a", 20, 30, "1"), read("b", 20, 30, "2")]
    assert verdict(*ops) is Verdict.OK
    result = check([*ops, read("b", 40, 50, "1")])
    assert result.verdict is Verdict.ILLEGAL
    assert result.keys["a"].verdict is Verdict.OK
    assert [r.key for r in result.failures] == ["b"]


# -- explanation and budget -----------------------------------------------------------------------


def test_explanation_names_the_operation_that_cannot_be_placed() -> None:
    stale = read(K, 40, 50, "1", client=7)
    result = check([write(K, 0, 10, "1", client=1), write(K, 20, 30, "2", client=2), stale])
    key = result.keys[K]
    assert key.verdict is Verdict.ILLEGAL
    assert key.stuck == stale
    assert [op.value for op in key.prefix] == ["1", "2"]
    assert key.state == "2"
    text = result.explain()
    assert "client 7 read -> '1'" in text and "leaving the register at '2'" in text


def test_gives_up_with_unknown_after_the_budget() -> None:
    # Many concurrent writes and a read of a value never written: the search must try every
    # order-preserving set before proving ILLEGAL, far more than the budget allows.
    ops = [write(K, 0, 100, f"v{i}") for i in range(40)] + [read(K, 0, 100, f"v{i}") for i in range(40)]
    ops.append(read(K, 200, 300, "never"))
    ticks = iter(range(10**9))
    result = check(ops, budget_s=5, clock=lambda: next(ticks))
    assert result.verdict is Verdict.UNKNOWN
    assert "unknown" in result.explain()


def test_operation_validation() -> None:
    for bad in (
        lambda: Operation(K, "delete", 0, 1),
        lambda: read(K, 5, 4, None),
        lambda: cas(K, 0, 1, "a", "b", ok=None),
        lambda: cas(K, 0, INFINITY, "a", "b", ok=True),
    ):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("accepted an invalid operation")


# -- an exhaustive oracle on small random histories -----------------------------------------------


def brute_force(ops: Sequence[Operation]) -> bool:
    """Try every order that respects real time; ambiguous operations may be left out."""
    ops = [op for op in ops if not (op.kind == READ and op.ambiguous)]

    def search(placed: frozenset[int], state: State) -> bool:
        pending = [i for i in range(len(ops)) if i not in placed]
        if all(ops[i].ambiguous for i in pending):
            return True
        for i in pending:
            if any(not ops[j].ambiguous and ops[j].ret < ops[i].call for j in pending if j != i):
                continue
            legal, after = step(state, ops[i])
            if legal and search(placed | {i}, after):
                return True
        return False

    return search(frozenset(), None)


VALUES = st.sampled_from(["a", "b", "c"])


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    ops: list[Operation] = []
    for _ in range(draw(st.integers(0, 7))):
        call = draw(st.integers(0, 20))
        ret: float = INFINITY if draw(st.integers(0, 5)) == 0 else call + draw(st.integers(0, 10))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        if kind == "read":
            ops.append(read(K, call, ret, draw(st.one_of(st.none(), VALUES))))
        elif kind == "write":
            ops.append(write(K, call, ret, draw(VALUES)))
        else:
            ok = None if ret == INFINITY else draw(st.booleans())
            ops.append(cas(K, call, ret, draw(VALUES), draw(VALUES), ok))
    return ops


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(small_histories())
def test_agrees_with_exhaustive_search(ops: list[Operation]) -> None:
    expected = Verdict.OK if brute_force(ops) else Verdict.ILLEGAL
    assert check(ops).verdict is expected, ops


# -- histories of a sequential register with random overlapping intervals -------------------------


@st.composite
def sequential_histories(draw: st.DrawFn) -> list[Operation]:
    """Run operations one at a time on a real register at points 0, 10, 20, ...; give each an
    interval around its point.  Some writes and cas's are ambiguous: either applied at their
    point or never, with the outcome withheld."""
    keys = ["x", "y"]
    state: dict[str, State] = dict.fromkeys(keys)
    written: dict[str, list[str]] = {k: [] for k in keys}
    ops: list[Operation] = []
    for n in range(draw(st.integers(1, 40))):
        point = 10 * n
        call = point - draw(st.integers(0, 35))
        ret: float = point + draw(st.integers(0, 35))
        client = draw(st.integers(0, 5))
        key = draw(st.sampled_from(keys))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        ambiguous = kind != "read" and draw(st.integers(0, 7)) == 0
        applied = not ambiguous or draw(st.booleans())
        if ambiguous:
            ret = INFINITY
        if kind == "read":
            ops.append(read(key, call, ret, state[key], client))
            continue
        new = f"{key}{n}"
        written[key].append(new)
        if kind == "write":
            ops.append(write(key, call, ret, new, client))
            if applied:
                state[key] = new
            continue
        current = state[key]
        candidates = [current] if current is not None else []
        expected: str = draw(st.sampled_from(candidates + written[key][-3:] + ["none-such"]))
        succeeded = state[key] == expected
        ops.append(cas(key, call, ret, expected, new, None if ambiguous else succeeded, client))
        if applied and succeeded:
            state[key] = new
    return ops


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(sequential_histories())
def test_sequential_register_histories_are_linearizable(ops: list[Operation]) -> None:
    result = check(ops)
    assert result.verdict is Verdict.OK, result.explain()


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(sequential_histories(), st.data())
def test_corrupted_read_is_caught_when_it_names_a_value_never_written(
    ops: list[Operation], data: st.DataObject
) -> None:
    reads = [i for i, op in enumerate(ops) if op.kind == READ and not op.ambiguous]
    if not reads:
        return
    i = data.draw(st.sampled_from(reads))
    ever = {op.value for op in ops if op.kind != READ}
    bogus = data.draw(st.sampled_from([None, "never-written", *sorted(v for v in ever if v is not None)]))
    if bogus == ops[i].value:
        return
    corrupted = list(ops)
    corrupted[i] = read(ops[i].key, ops[i].call, ops[i].ret, bogus, ops[i].client)
    result = check(corrupted)
    assert result.verdict is not Verdict.UNKNOWN
    if bogus not in ever and bogus is not None:
        assert result.verdict is Verdict.ILLEGAL
        assert result.keys[ops[i].key].stuck is not None


def test_a_long_busy_history_is_checked_quickly() -> None:
    """600 operations by 6 clients on one key, overlapping heavily: the cache keeps it fast."""
    ops: list[Operation] = []
    state: State = None
    for n in range(600):
        point = 10 * n
        call, ret = point - (n * 7919) % 50, point + (n * 104729) % 50
        if n % 3 == 0:
            state = f"v{n}"
            ops.append(write(K, call, ret, state, n % 6))
        elif n % 3 == 1:
            ops.append(read(K, call, ret, state, n % 6))
        else:
            ops.append(
                write(K, call, INFINITY, f"lost{n}", n % 6) if n % 30 == 2 else read(K, call, ret, state)
            )
    result = check(ops, budget_s=20)
    assert result.verdict is Verdict.OK, result.explain()
    assert sum(op.kind == WRITE for op in ops) == 220


def test_a_stale_read_among_many_timed_out_writes_is_proven_illegal_quickly() -> None:
    """Unobserved ambiguous writes are left out up front; otherwise each would multiply the
    places to try before the search could give up on a stale read deep in the history."""
    ops: list[Operation] = []
    state: State = None
    for n in range(3000):
        point = 10 * n
        call, ret = point - (n * 7919) % 50, point + (n * 104729) % 50
        if n % 3 == 0:
            state = f"v{n}"
            ops.append(write(K, call, ret, state, n % 6))
        elif n % 30 == 2:
            ops.append(write(K, call, INFINITY, f"lost{n}", n % 6))
        else:
            ops.append(read(K, call, ret, state, n % 6))
    assert check(ops, budget_s=20).verdict is Verdict.OK
    ops[2500] = read(K, ops[2500].call, ops[2500].ret, "v300")
    result = check(ops, budget_s=20)
    assert result.verdict is Verdict.ILLEGAL
    assert result.keys[K].stuck == ops[2500]
