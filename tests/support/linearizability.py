"""A linearizability checker for key-value register histories (read, write, compare-and-swap).

Model.  Every key is an independent register whose state is its value, or ``None`` while it is
missing.  Operations:

- ``read``  -> the value seen (``None`` = key not found); legal iff it equals the state.
- ``write`` (value) -> always legal; the state becomes the value.
- ``cas`` (expected -> new) -> ``ok=True`` is legal iff the state equals ``expected`` (the state
  becomes ``new``); ``ok=False`` (e.g. etcd's 412 "Compare failed", or 404 on a missing key) is
  legal iff the state differs from ``expected`` and changes nothing.

History.  Each operation carries its call and return time (monotonic ns, from one clock).  Two
operations overlap when neither returned strictly before the other was called; equal times count
as overlap, the permissive reading.  An operation that failed ambiguously (timeout, connection
reset, 5xx) has ``ret = INFINITY`` and no output: it may have taken effect at any single point
after its call, or never (porcupine's rule).  An ambiguous write or cas is therefore *optional*:
the search may place it anywhere after its call, or leave it out.  An ambiguous read constrains
nothing and is dropped.  So is an ambiguous write or cas whose value nobody observed (no read
returned it, no successful cas expected it) when no failed cas could come after it: while the
register holds that value every read and successful cas is illegal, so only a failed cas could
ever be helped by applying it, and leaving it out is always at least as good.  Without this,
each timed-out write multiplies the places the search must try before proving a history illegal.

Search.  Keys are checked separately, which is sound because linearizability is local
(Herlihy & Wing's P-compositionality).  Per key: Wing & Gong's depth-first search over the
history as a list of call and return events, with Lowe's memoisation.  Walking the list from its
head, a call event is a candidate to linearize next: if the model accepts it in the current state
and the pair (set of linearized operations, resulting state) was never reached before, the
operation is linearized (its events are lifted out of the list, pushed on a stack) and the walk
restarts at the head.  Reaching a return event means that operation had to be linearized before
everything still in the list and was not: backtrack (pop, relink, try the next call).  The
history is linearizable once every completed operation is linearized; left-over ambiguous ones
never took effect.  The cache bounds the work by (reachable sets x states) instead of orderings.

Results.  ``Verdict.OK``, ``Verdict.ILLEGAL`` with a short explanation (the longest linearizable
prefix found and the operation that could not be placed after it), or ``Verdict.UNKNOWN`` once the
time budget is spent: a search that gave up proves nothing either way.
"""

from __future__ import annotations

import enum
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

INFINITY = math.inf

READ = "read"
WRITE = "write"
CAS = "cas"

State = str | None


class Verdict(enum.Enum):
    OK = "linearizable"
    ILLEGAL = "not linearizable"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key.

    ``value``: what a write sets, what a cas sets on success, what a read returned.
    ``expected``: a cas's compare value.  ``ok``: a cas's outcome (``None`` when ambiguous).
    ``ret``: ``INFINITY`` when the outcome is unknown.
    """

    key: str
    kind: str
    call: int
    ret: float
    value: State = None
    expected: State = None
    ok: bool | None = None
    client: int = -1

    def __post_init__(self) -> None:
        if self.kind not in (READ, WRITE, CAS):
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if self.ret < self.call:
            raise ValueError(f"operation returns before it is called: {self}")
        if self.kind == CAS and self.ok is None and not self.ambiguous:
            raise ValueError(f"a completed cas needs its outcome: {self}")
        if self.ambiguous and self.ok is not None:
            raise ValueError(f"an ambiguous operation has no outcome: {self}")

    @property
    def ambiguous(self) -> bool:
        return self.ret == INFINITY

    def describe(self) -> str:
        when = f"[{self.call}, {'inf' if self.ambiguous else int(self.ret)}]"
        who = f"client {self.client} " if self.client >= 0 else ""
        if self.kind == READ:
            what = f"read -> {self.value!r}"
        elif self.kind == WRITE:
            what = f"write {self.value!r}" + (" (outcome unknown)" if self.ambiguous else "")
        else:
            outcome = "unknown" if self.ok is None else ("ok" if self.ok else "fail")
            what = f"cas {self.expected!r} -> {self.value!r}: {outcome}"
        return f"{who}{what} {when} on {self.key!r}"


def read(key: str, call: int, ret: float, value: State, client: int = -1) -> Operation:
    return Operation(key, READ, call, ret, value=value, client=client)


def write(key: str, call: int, ret: float, value: str, client: int = -1) -> Operation:
    return Operation(key, WRITE, call, ret, value=value, client=client)


def cas(
    key: str, call: int, ret: float, expected: str, new: str, ok: bool | None, client: int = -1
) -> Operation:
    return Operation(key, CAS, call, ret, value=new, expected=expected, ok=ok, client=client)


def step(state: State, op: Operation) -> tuple[bool, State]:
    """The sequential register: (is ``op`` legal in ``state``, the state after it)."""
    if op.kind == READ:
        return state == op.value, state
    if op.kind == WRITE:
        return True, op.value
    if op.ok is None:  # an ambiguous cas placed here does whatever the register decides
        return True, op.value if state == op.expected else state
    if op.ok:
        return state == op.expected, op.value
    return state != op.expected, state


@dataclass
class KeyResult:
    key: str
    verdict: Verdict
    operations: int
    # ILLEGAL only: the longest linearizable prefix found, the state after it, and the completed
    # operation that could be placed neither there nor anywhere earlier the search tried.
    prefix: list[Operation] = field(default_factory=list)
    state: State = None
    stuck: Operation | None = None

    def explain(self) -> str:
        if self.verdict is Verdict.OK:
            return f"key {self.key!r}: linearizable ({self.operations} operations)"
        if self.verdict is Verdict.UNKNOWN:
            return f"key {self.key!r}: unknown, time budget spent ({self.operations} operations)"
        lines = [
            f"key {self.key!r}: not linearizable; longest linearizable prefix has {len(self.prefix)} "
            f"of {self.operations} operations, leaving the register at {self.state!r}; "
            f"cannot place: {self.stuck.describe() if self.stuck else '?'}",
            "prefix tail:",
        ]
        lines += [f"  {op.describe()}" for op in self.prefix[-8:]]
        return "\n".join(lines)


@dataclass
class CheckResult:
    verdict: Verdict
    keys: dict[str, KeyResult]

    @property
    def failures(self) -> list[KeyResult]:
        return [r for r in self.keys.values() if r.verdict is not Verdict.OK]

    def explain(self) -> str:
        bad = self.failures
        if not bad:
            return f"linearizable ({len(self.keys)} keys)"
        return "\n".join(r.explain() for r in bad)


def check_key(
    key: str,
    ops: Sequence[Operation],
    initial: State = None,
    deadline: float = INFINITY,
    clock: Callable[[], float] = time.monotonic,
) -> KeyResult:
    """Wing & Gong search with Lowe's cache over the operations of one key (see module doc)."""
    observed = {op.value for op in ops if op.kind == READ} | {op.expected for op in ops if op.ok}
    last_failed_cas = max((op.ret for op in ops if op.ok is False), default=-INFINITY)
    ops = [
        op
        for op in ops
        if not op.ambiguous or (op.kind != READ and (op.value in observed or last_failed_cas >= op.call))
    ]
    n = len(ops)
    # Events as nodes of a doubly linked list: node 0 is the head sentinel, node 2i+1 the call of
    # ops[i], node 2i+2 its return.  Calls sort before returns at equal times (they overlap).
    events: list[tuple[float, int, int]] = [(op.call, 0, 2 * i + 1) for i, op in enumerate(ops)]
    events += [(op.ret, 1, 2 * i + 2) for i, op in enumerate(ops) if not op.ambiguous]
    events.sort()
    size = 2 * n + 2
    nxt = [-1] * size
    prv = [-1] * size
    last = 0
    for _, _, node in events:
        nxt[last] = node
        prv[node] = last
        last = node

    def unlink(node: int) -> None:
        p, q = prv[node], nxt[node]
        nxt[p] = q
        if q != -1:
            prv[q] = p

    def relink(node: int) -> None:  # exact inverse of unlink, valid in LIFO order
        p, q = prv[node], nxt[node]
        nxt[p] = node
        if q != -1:
            prv[q] = node

    remaining = sum(1 for op in ops if not op.ambiguous)
    state = initial
    linearized = 0
    stack: list[tuple[int, State]] = []  # (operation index, state before it)
    cache: set[tuple[int, State]] = set()
    best: tuple[list[int], State, int] | None = None
    node = nxt[0]
    steps = 0
    while remaining:
        steps += 1
        if not steps & 1023 and clock() > deadline:
            return KeyResult(key, Verdict.UNKNOWN, n)
        i = (node - 1) >> 1
        if node & 1:  # a call: try to linearize ops[i] now
            op = ops[i]
            legal, after = step(state, op)
            if legal:
                grown = linearized | (1 << i)
                if (grown, after) not in cache:
                    cache.add((grown, after))
                    stack.append((i, state))
                    linearized, state = grown, after
                    unlink(node)
                    if not op.ambiguous:
                        unlink(node + 1)
                        remaining -= 1
                    node = nxt[0]
                    continue
            node = nxt[node]
        else:  # the return of an operation not yet linearized: nothing before it can go first
            if best is None or len(stack) > len(best[0]):
                best = ([j for j, _ in stack], state, i)
            if not stack:
                break
            j, state = stack.pop()
            linearized &= ~(1 << j)
            call = 2 * j + 1
            if not ops[j].ambiguous:
                relink(call + 1)
                remaining += 1
            relink(call)
            node = nxt[call]
    else:
        return KeyResult(key, Verdict.OK, n)
    assert best is not None
    order, at, stuck = best
    return KeyResult(key, Verdict.ILLEGAL, n, [ops[j] for j in order], at, ops[stuck])


def check(
    history: Iterable[Operation],
    initial: dict[str, State] | None = None,
    budget_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Check a whole history key by key within ``budget_s`` seconds of ``clock`` in total.

    ILLEGAL if any key is; else UNKNOWN if any key ran out of budget; else OK."""
    deadline = clock() + budget_s
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    results: dict[str, KeyResult] = {}
    for key in sorted(by_key):
        start = (initial or {}).get(key)
        results[key] = check_key(key, by_key[key], start, deadline, clock)
    verdicts = {r.verdict for r in results.values()}
    if Verdict.ILLEGAL in verdicts:
        verdict = Verdict.ILLEGAL
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    return CheckResult(verdict, results)
