"""Raft messages: what members send each other (Raft paper figure 2, thesis §3, §4, §6, §9.6).

Field names follow etcd's raftpb.Message.  The transport encodes a message as a fixed binary
header, an orjson envelope for the small fields and raw bytes for entry payloads and snapshot
data (never pickle).  ``to``/``frm`` are member ids (64-bit); 0 means none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import Entry

# Message types (values are part of the wire format: never renumber).
MSG_HUP = 0  # local: start an election
MSG_BEAT = 1  # local: leader sends heartbeats
MSG_PROP = 2  # a proposal (forwarded to the leader)
MSG_APP = 3  # AppendEntries
MSG_APP_RESP = 4
MSG_VOTE = 5  # RequestVote
MSG_VOTE_RESP = 6
MSG_SNAP = 7  # InstallSnapshot
MSG_HEARTBEAT = 8
MSG_HEARTBEAT_RESP = 9
MSG_UNREACHABLE = 10  # local: the transport could not reach ``frm``
MSG_SNAP_STATUS = 11  # local: outcome of sending a snapshot
MSG_CHECK_QUORUM = 12  # local
MSG_TRANSFER_LEADER = 13
MSG_TIMEOUT_NOW = 14
MSG_READ_INDEX = 15
MSG_READ_INDEX_RESP = 16
MSG_PRE_VOTE = 17
MSG_PRE_VOTE_RESP = 18

MSG_NAMES = {
    MSG_HUP: "MsgHup",
    MSG_BEAT: "MsgBeat",
    MSG_PROP: "MsgProp",
    MSG_APP: "MsgApp",
    MSG_APP_RESP: "MsgAppResp",
    MSG_VOTE: "MsgVote",
    MSG_VOTE_RESP: "MsgVoteResp",
    MSG_SNAP: "MsgSnap",
    MSG_HEARTBEAT: "MsgHeartbeat",
    MSG_HEARTBEAT_RESP: "MsgHeartbeatResp",
    MSG_UNREACHABLE: "MsgUnreachable",
    MSG_SNAP_STATUS: "MsgSnapStatus",
    MSG_CHECK_QUORUM: "MsgCheckQuorum",
    MSG_TRANSFER_LEADER: "MsgTransferLeader",
    MSG_TIMEOUT_NOW: "MsgTimeoutNow",
    MSG_READ_INDEX: "MsgReadIndex",
    MSG_READ_INDEX_RESP: "MsgReadIndexResp",
    MSG_PRE_VOTE: "MsgPreVote",
    MSG_PRE_VOTE_RESP: "MsgPreVoteResp",
}


@dataclass(slots=True)
class SnapshotMeta:
    """Which log prefix a snapshot replaces, and the voters as of its last entry."""

    index: int
    term: int
    voters: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes = b""


@dataclass(slots=True)
class Message:
    type: int
    to: int = 0
    frm: int = 0
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None

    def __repr__(self) -> str:
        name = MSG_NAMES.get(self.type, str(self.type))
        return (
            f"{name} {self.frm:x}->{self.to:x} term={self.term} log_term={self.log_term} index={self.index} "
            f"commit={self.commit} entries={len(self.entries)} reject={self.reject}"
        )
