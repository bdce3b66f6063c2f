"""The Raft state machine: roles, elections, replication, ReadIndex, leadership transfer and
single-member configuration changes (Raft paper; Ongaro's thesis).  Sans-IO: ``step`` and
``tick`` change in-memory state and queue outgoing messages in ``msgs``; node.py hands them to
the caller in a Ready, together with what to persist.

Rules this file keeps, with where they come from:

- Terms (§5.1): a message of a higher term makes this member a follower of that term first,
  except pre-votes (thesis §9.6) which never change anyone's term, and vote requests inside a
  leader lease when check-quorum is on (thesis §4.2.3: a member that heard from a leader
  within the election timeout ignores disruptive candidates, unless leadership is being
  transferred).  A message of a lower term is ignored, answered only so a stale leader or
  candidate learns the newer term.
- Elections (§5.2, §5.4.1): randomized timeouts in [election_tick, 2 * election_tick)
  from the injected ``rng``; a vote goes to at most one candidate per term and only to one
  whose log is at least as up-to-date.  With pre-vote a member first asks whether it could
  win, without bumping its term, so a member rejoining after a partition does not depose a
  working leader.
- Check-quorum (thesis §6.2): a leader that has not heard from a majority within an
  election timeout steps down.
- Replication (§5.3): per-follower Progress (progress.py); MsgApp carries the previous
  entry's index and term; a follower accepts only if it holds that entry, truncates a
  conflicting suffix (never a committed entry) and appends.  Rejections carry a hint so the
  leader skips a whole term of mismatching entries per round trip.
- Commit (§5.4.2, figure 8): the leader commits the highest index stored durably on a
  majority only if that entry is of its current term; earlier entries commit with it.  The
  leader counts itself only once its own write is durable (node.advance).
- Snapshots (§7): a follower that needs compacted entries gets the leader's newest snapshot.
- Leadership transfer (thesis §3.10): the leader stops accepting proposals, brings the
  transferee up to date, then tells it to campaign at once (MsgTimeoutNow); abandoned after
  an election timeout.
- ReadIndex (thesis §6.4): see readonly.py.
- Configuration (thesis §4.1): see confchange.py.

Invariants checked by tests/raft/test_simulation.py at every step: at most one leader per
term, logs that share an (index, term) are identical up to it, committed entries never
change, every state machine applies the same sequence.
"""

from __future__ import annotations

import random

from .confchange import CONF_ADD_NODE, CONF_REMOVE_NODE, ConfChange, apply_to
from .log import RaftLog
from .messages import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_BEAT,
    MSG_CHECK_QUORUM,
    MSG_HEARTBEAT,
    MSG_HEARTBEAT_RESP,
    MSG_HUP,
    MSG_PRE_VOTE,
    MSG_PRE_VOTE_RESP,
    MSG_PROP,
    MSG_READ_INDEX,
    MSG_READ_INDEX_RESP,
    MSG_SNAP,
    MSG_SNAP_STATUS,
    MSG_TIMEOUT_NOW,
    MSG_TRANSFER_LEADER,
    MSG_UNREACHABLE,
    MSG_VOTE,
    MSG_VOTE_RESP,
    Message,
    Snapshot,
)
from .progress import PROBE, REPLICATE, SNAPSHOT, Progress
from .quorum import VOTE_LOST, VOTE_WON, has_quorum, majority, vote_result
from .readonly import ReadOnly, ReadState
from .types import EMPTY_HARD_STATE, ENTRY_CONF_CHANGE, ENTRY_NORMAL, Entry, HardState

FOLLOWER = "StateFollower"
PRE_CANDIDATE = "StatePreCandidate"
CANDIDATE = "StateCandidate"
LEADER = "StateLeader"

# MsgVote context of a campaign started by MsgTimeoutNow: it overrides leader leases.
CAMPAIGN_TRANSFER = b"CampaignTransfer"


class NotLeaderError(Exception):
    """A proposal reached a member that is not the leader (or a leader handing over leadership)."""


class RaftCore:
    __slots__ = (
        "id",
        "voters",
        "log",
        "term",
        "vote",
        "state",
        "lead",
        "election_tick",
        "heartbeat_tick",
        "pre_vote",
        "check_quorum",
        "max_inflight",
        "max_size_per_msg",
        "rng",
        "msgs",
        "read_states",
        "progress",
        "votes",
        "election_elapsed",
        "heartbeat_elapsed",
        "randomized_election_timeout",
        "lead_transferee",
        "pending_conf_index",
        "read_only",
        "_pending_reads",
        "_bcast_pending",
        "_bcast_commit",
    )

    def __init__(
        self,
        node_id: int,
        voters: list[int],
        log: RaftLog | None = None,
        hard_state: HardState = EMPTY_HARD_STATE,
        *,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_inflight: int = 256,
        max_size_per_msg: int = 1 << 20,
        rng: random.Random | None = None,
    ) -> None:
        if node_id == 0:
            raise ValueError("member id 0 means none")
        if heartbeat_tick <= 0 or election_tick <= heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if max_inflight <= 0:
            raise ValueError("max_inflight must be positive")
        self.id = node_id
        # A member outside ``voters`` (joining, or removed) never campaigns.
        self.voters = sorted(set(voters))
        self.log = log if log is not None else RaftLog()
        self.term = hard_state.term
        self.vote = hard_state.vote
        if hard_state.commit:
            self.log.commit_to(min(hard_state.commit, self.log.last_index()))
        self.election_tick = election_tick
        self.heartbeat_tick = heartbeat_tick
        self.pre_vote = pre_vote
        self.check_quorum = check_quorum
        self.max_inflight = max_inflight
        self.max_size_per_msg = max_size_per_msg
        # Seeded per member by default so that runs are reproducible without an rng.
        self.rng = rng if rng is not None else random.Random(node_id)
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.read_only = ReadOnly()
        self._pending_reads: list[Message] = []
        self.state = FOLLOWER
        self.lead = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = election_tick
        self.lead_transferee = 0
        self.pending_conf_index = 0
        self._bcast_pending = False
        self._bcast_commit = False
        self._become_follower(self.term, 0)

    # -- public inputs ------------------------------------------------------------------

    def tick(self) -> None:
        """One logical clock tick (no clock is read here)."""
        if self.state == LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (with a pre-vote round first when enabled).  A sole voter wins at once."""
        self.step(Message(MSG_HUP, frm=self.id))

    def propose(self, data: bytes, entry_type: int = ENTRY_NORMAL) -> int:
        """Append a proposal to the leader's log; returns its index.

        A configuration change proposed while an earlier one is not yet applied becomes an
        empty normal entry (one pending change at a time, thesis §4.1), as etcd does; check
        ``pending_conf_index <= log.applied`` first to know it will be accepted.
        """
        if self.state != LEADER or self.lead_transferee:
            raise NotLeaderError()
        log = self.log
        index = log.offset + len(log.entries) + 1
        if entry_type == ENTRY_CONF_CHANGE:
            if self.pending_conf_index > log.applied:
                entry_type, data = ENTRY_NORMAL, b""
            else:
                self.pending_conf_index = index
        log.entries.append(Entry(self.term, index, entry_type, data))
        self._bcast_pending = True
        return index

    def propose_many(self, items: list[bytes]) -> int:
        """Append several normal proposals; returns the index of the last one."""
        if self.state != LEADER or self.lead_transferee:
            raise NotLeaderError()
        log = self.log
        term = self.term
        index = log.offset + len(log.entries)
        append = log.entries.append
        for data in items:
            index += 1
            append(Entry(term, index, ENTRY_NORMAL, data))
        self._bcast_pending = True
        return index

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read; the answer arrives as ``ReadState(index, ctx)`` in a Ready."""
        self.step(Message(MSG_READ_INDEX, frm=self.id, context=ctx))

    def transfer_leader(self, to: int) -> None:
        """Hand leadership to voter ``to`` (thesis §3.10); on a follower, the request goes to the leader."""
        self.step(Message(MSG_TRANSFER_LEADER, frm=to))

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to send to ``node_id``: stop streaming to it optimistically."""
        self.step(Message(MSG_UNREACHABLE, frm=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """Outcome of sending a MsgSnap to ``node_id``."""
        self.step(Message(MSG_SNAP_STATUS, frm=node_id, reject=not ok))

    def apply_conf_change(self, cc: ConfChange) -> list[int]:
        """Apply a committed single-member change (confchange.py); returns the new voters."""
        self.voters = apply_to(self.voters, cc)
        if self.state != LEADER:
            return list(self.voters)
        if cc.op == CONF_ADD_NODE and cc.node_id not in self.progress:
            pr = Progress(self.log.last_index() + 1, self.max_inflight)
            # A new member has had no chance to answer yet: do not count it as lost.
            pr.recent_active = True
            self.progress[cc.node_id] = pr
            self._maybe_send_append(cc.node_id, True)  # probe it now, not at the next heartbeat
        elif cc.op == CONF_REMOVE_NODE:
            self.progress.pop(cc.node_id, None)
            if cc.node_id == self.id:
                # Thesis §4.2.2: a leader removed from the configuration steps down.
                self._become_follower(self.term, 0)
                return list(self.voters)
            if self.lead_transferee == cc.node_id:
                self.lead_transferee = 0
        # A smaller quorum may commit more; a new member needs entries.
        if not self._maybe_commit():
            self._bcast_pending = True
        return list(self.voters)

    def step(self, m: Message) -> None:
        """Process one message (from a peer, or local: MsgHup, MsgBeat, MsgProp ... with term 0)."""
        t = m.type
        if m.term == 0:
            pass
        elif m.term > self.term:
            if t in (MSG_VOTE, MSG_PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = self.check_quorum and self.lead != 0 and self.election_elapsed < self.election_tick
                if in_lease and not force:
                    return
            if t == MSG_PRE_VOTE or (t == MSG_PRE_VOTE_RESP and not m.reject):
                # A pre-vote changes no term; a granted pre-vote is counted below.
                pass
            elif t in (MSG_APP, MSG_HEARTBEAT, MSG_SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, 0)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and (t in (MSG_HEARTBEAT, MSG_APP)):
                # The sender is a stale leader that may never hear a higher term otherwise:
                # with pre-vote or check-quorum the rest of the cluster does not campaign
                # against it.  The answer makes it step down.
                self.msgs.append(Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term))
            elif t == MSG_PRE_VOTE:
                self.msgs.append(
                    Message(MSG_PRE_VOTE_RESP, to=m.frm, frm=self.id, term=self.term, reject=True)
                )
            return

        if t == MSG_HUP:
            self._hup(transfer=False)
        elif t in (MSG_VOTE, MSG_PRE_VOTE):
            self._handle_vote_request(m)
        elif self.state == LEADER:
            self._step_leader(m)
        elif self.state == FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # -- roles --------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = 0
        self.lead = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_tick + self.rng.randrange(self.election_tick)
        self.lead_transferee = 0
        self.votes = {}
        self.progress = {}
        self.pending_conf_index = 0
        # Unanswered reads are dropped: the caller times them out and retries.
        self.read_only.reset()
        self._pending_reads = []
        self._bcast_pending = self._bcast_commit = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.state = FOLLOWER
        self.lead = lead

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote change: a failed pre-vote leaves no trace (thesis §9.6).
        self.state = PRE_CANDIDATE
        self.votes = {}
        self.lead = 0

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.state = LEADER
        self.lead = self.id
        log = self.log
        last = log.last_index()
        for v in self.voters:
            self.progress[v] = Progress(last + 1, self.max_inflight)
        me = self.progress.get(self.id)
        if me is not None:
            me.match = log.stable_index
            me.become_replicate()
            me.next = last + 1
        # Any unapplied entry may be a configuration change: allow none until all applied.
        self.pending_conf_index = last
        # §5.4.2 / thesis §6.4: an entry of the new term lets earlier entries commit and
        # gives ReadIndex a commit index it can trust.
        log.entries.append(Entry(self.term, last + 1, ENTRY_NORMAL, b""))
        self._bcast_pending = True

    def _promotable(self) -> bool:
        return self.id in self.voters

    def _tick_election(self) -> None:
        if len(self.voters) == 1 and self.voters[0] == self.id:
            self._hup(transfer=False)  # a sole voter needs nobody's vote
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self._promotable():
            self.election_elapsed = 0
            self.step(Message(MSG_HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_tick:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MSG_CHECK_QUORUM, frm=self.id))
            if self.state == LEADER and self.lead_transferee:
                self.lead_transferee = 0  # the transfer did not finish in time: resume
        if self.state != LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    # -- elections ----------------------------------------------------------------------

    def _has_unapplied_conf_change(self) -> bool:
        # A member must not campaign under a configuration it has not applied yet: it
        # could count the wrong majority (etcd's rule).
        log = self.log
        for e in log.entries[log.applied - log.offset : log.committed - log.offset]:
            if e.type == ENTRY_CONF_CHANGE:
                return True
        return False

    def _hup(self, transfer: bool) -> None:
        if self.state == LEADER or not self._promotable():
            return
        # A sole voter is exempt: its bootstrap log holds committed, not yet applied
        # configuration entries, and it must win at once (the server campaigns before
        # replaying them).
        if len(self.voters) > 1 and self._has_unapplied_conf_change():
            return
        if self.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type = MSG_PRE_VOTE
            term = self.term + 1
        else:
            self._become_candidate()
            vote_type = MSG_VOTE
            term = self.term
        self.votes[self.id] = True
        if vote_result(self.voters, self.votes) == VOTE_WON:
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for v in self.voters:
            if v != self.id:
                self.msgs.append(
                    Message(
                        vote_type,
                        to=v,
                        frm=self.id,
                        term=term,
                        log_term=last_term,
                        index=last_index,
                        context=ctx,
                    )
                )

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == MSG_PRE_VOTE
        resp = MSG_PRE_VOTE_RESP if pre else MSG_VOTE_RESP
        can_vote = self.vote == m.frm or (self.vote == 0 and self.lead == 0) or (pre and m.term > self.term)
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A granted pre-vote answers with the future term so the candidate counts it.
            self.msgs.append(Message(resp, to=m.frm, frm=self.id, term=m.term))
            if not pre:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.msgs.append(Message(resp, to=m.frm, frm=self.id, term=self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == MSG_APP:
            self._become_follower(m.term, m.frm)
            self._handle_append(m)
        elif t == MSG_HEARTBEAT:
            self._become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == MSG_SNAP:
            self._become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif (t == MSG_PRE_VOTE_RESP and self.state == PRE_CANDIDATE) or (
            t == MSG_VOTE_RESP and self.state == CANDIDATE
        ):
            if m.frm not in self.votes:
                self.votes[m.frm] = not m.reject
            result = vote_result(self.voters, self.votes)
            if result == VOTE_WON:
                if self.state == PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif result == VOTE_LOST:
                self._become_follower(self.term, 0)
        # MsgProp, MsgReadIndex, MsgTimeoutNow ...: no leader to serve them, dropped.

    # -- follower -----------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MSG_APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == MSG_HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MSG_SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t in (MSG_PROP, MSG_READ_INDEX, MSG_TRANSFER_LEADER):
            if self.lead != 0:
                # Forwarded unchanged (term 0, like a local message): the leader answers ``frm``.
                self.msgs.append(
                    Message(
                        t,
                        to=self.lead,
                        frm=m.frm if t == MSG_TRANSFER_LEADER else self.id,
                        entries=m.entries,
                        context=m.context,
                    )
                )
        elif t == MSG_READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        elif t == MSG_TIMEOUT_NOW:
            self._hup(transfer=True)

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.msgs.append(
                Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term, index=log.committed)
            )
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new >= 0:
            self.msgs.append(Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term, index=last_new))
            return
        hint = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        self.msgs.append(
            Message(
                MSG_APP_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=log.term(hint),
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        # The leader sends min(match, commit): we hold that prefix durably, matching its log.
        self.log.commit_to(m.commit)
        self.msgs.append(
            Message(MSG_HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term, context=m.context)
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        log = self.log
        if snap is not None and self._restore(snap):
            index = log.last_index()
        else:
            index = log.committed
        self.msgs.append(Message(MSG_APP_RESP, to=m.frm, frm=self.id, term=self.term, index=index))

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.meta
        log = self.log
        if meta.index <= log.committed:
            return False
        if log.match_term(meta.index, meta.term):
            # We hold the snapshot's last entry: only the commit index is news (§7).
            log.commit_to(meta.index)
            return False
        log.restore(snap)
        self.voters = sorted(set(meta.voters))
        return True

    # -- leader -------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MSG_BEAT:
            self._bcast_heartbeat()
            return
        if t == MSG_CHECK_QUORUM:
            active = [v for v, p in self.progress.items() if p.recent_active or v == self.id]
            for v, p in self.progress.items():
                if v != self.id:
                    p.recent_active = False
            if not has_quorum(self.voters, active):
                self._become_follower(self.term, 0)
            return
        if t == MSG_PROP:
            if self.lead_transferee or not m.entries:
                return
            log = self.log
            index = log.last_index()
            for e in m.entries:
                index += 1
                etype, data = e.type, e.data
                if etype == ENTRY_CONF_CHANGE:
                    if self.pending_conf_index > log.applied:
                        etype, data = ENTRY_NORMAL, b""
                    else:
                        self.pending_conf_index = index
                log.entries.append(Entry(self.term, index, etype, data))
            self._bcast_pending = True
            return
        if t == MSG_READ_INDEX:
            if len(self.voters) == 1 and self.voters[0] == self.id:
                self._answer_read(m.frm, m.context, self.log.committed)
            elif self.log.term(self.log.committed) != self.term:
                self._pending_reads.append(m)
            else:
                self._start_read(m)
            return
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        if t == MSG_APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MSG_HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.inflights.full():
                # A lost MsgApp would hold a slot forever; a heartbeat answer proves the
                # follower is reachable, so free one and let a rejection re-probe if needed.
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self._maybe_send_append(m.frm, True)
            if m.context:
                acks = self.read_only.recv_ack(m.frm, m.context)
                if acks is not None and len(acks.intersection(self.voters)) + 1 >= majority(len(self.voters)):
                    for rs in self.read_only.advance(m.context):
                        self._answer_read(rs.frm, rs.ctx, rs.index)
        elif t == MSG_SNAP_STATUS:
            if pr.state != SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for the next heartbeat answer before probing again.
            pr.probe_sent = True
        elif t == MSG_UNREACHABLE:
            if pr.state == REPLICATE:
                pr.become_probe()
        elif t == MSG_TRANSFER_LEADER:
            transferee = m.frm
            if transferee == self.id or transferee not in self.voters:
                return
            if self.lead_transferee == transferee:
                return
            self.lead_transferee = transferee
            self.election_elapsed = 0  # it must finish within one election timeout
            if pr.match == self.log.last_index():
                self._send_timeout_now(transferee)
            else:
                self._maybe_send_append(transferee, True)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        log = self.log
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe = log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.frm, True)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT:
            if pr.match >= log.offset:
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if not self._maybe_commit() and was_paused:
            self._maybe_send_append(m.frm, True)
        while self._maybe_send_append(m.frm, False):
            pass
        if m.frm == self.lead_transferee and pr.match == log.last_index():
            self._send_timeout_now(m.frm)

    def _send_timeout_now(self, to: int) -> None:
        self.msgs.append(Message(MSG_TIMEOUT_NOW, to=to, frm=self.id, term=self.term))

    def _maybe_commit(self) -> bool:
        """Commit the highest index durable on a majority, if it is of this term (§5.4.2)."""
        progress = self.progress
        voters = self.voters
        if len(voters) == 1:
            pr = progress.get(voters[0])
            index = pr.match if pr is not None else 0
        else:
            matches = sorted((progress[v].match if v in progress else 0 for v in voters), reverse=True)
            if not matches:
                return False
            index = matches[majority(len(matches)) - 1]
        log = self.log
        if index <= log.committed or log.term(index) != self.term:
            return False
        log.commit_to(index)
        # Followers learn the new commit index from the next (possibly empty) MsgApp.
        self._bcast_pending = self._bcast_commit = True
        if self._pending_reads:
            pending, self._pending_reads = self._pending_reads, []
            for r in pending:
                self._start_read(r)
        return True

    def _start_read(self, m: Message) -> None:
        if self.read_only.add_request(self.log.committed, m.frm, m.context):
            self._bcast_heartbeat()

    def _answer_read(self, frm: int, ctx: bytes, index: int) -> None:
        if frm == self.id or frm == 0:
            self.read_states.append(ReadState(index, ctx))
        else:
            self.msgs.append(
                Message(MSG_READ_INDEX_RESP, to=frm, frm=self.id, term=self.term, index=index, context=ctx)
            )

    def _bcast_heartbeat(self) -> None:
        ctx = self.read_only.last_pending_ctx()
        committed = self.log.committed
        for v, pr in self.progress.items():
            if v != self.id:
                self.msgs.append(
                    Message(
                        MSG_HEARTBEAT,
                        to=v,
                        frm=self.id,
                        term=self.term,
                        commit=min(pr.match, committed),
                        context=ctx,
                    )
                )

    def _flush_appends(self) -> None:
        """Send what proposals and commits since the last Ready made new, one batch per follower."""
        send_if_empty = self._bcast_commit
        self._bcast_pending = self._bcast_commit = False
        if self.state != LEADER or len(self.progress) <= 1:
            return
        for v in self.progress:
            if v != self.id and self._maybe_send_append(v, send_if_empty):
                while self._maybe_send_append(v, False):
                    pass

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        if prev < log.offset:
            return self._send_snapshot(to, pr)
        last = log.offset + len(log.entries)
        if pr.next <= last:
            entries = log.slice(pr.next, last + 1, self.max_size_per_msg)
        elif send_if_empty:
            entries = []
        else:
            return False
        self.msgs.append(
            Message(
                MSG_APP,
                to=to,
                frm=self.id,
                term=self.term,
                log_term=log.term(prev),
                index=prev,
                entries=entries,
                commit=log.committed,
            )
        )
        if pr.state == REPLICATE:
            if entries:
                sent = entries[-1].index
                pr.next = sent + 1
                pr.inflights.add(sent)
        else:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        source = self.log.snapshot_source
        snap = source() if source is not None else None
        if snap is None or snap.meta.index < self.log.offset:
            return False  # none that covers the compacted prefix yet: retried on the next heartbeat
        pr.become_snapshot(snap.meta.index)
        self.msgs.append(Message(MSG_SNAP, to=to, frm=self.id, term=self.term, snapshot=snap))
        return True
