"""Single-member configuration changes (thesis §4.1).

Adding or removing one voter at a time keeps every majority of the old configuration
overlapping every majority of the new one, so no joint consensus is needed.  Rules:

- A change is proposed as an ENTRY_CONF_CHANGE entry (the payload is the caller's); the
  caller applies it when committed and then calls ``RaftNode.apply_conf_change``.  A
  configuration takes effect on apply, as in etcd (thesis §4.1 allows earlier use, but
  applying keeps every member's view a function of its applied index).
- At most one change is pending: the leader refuses a new one while an earlier one is not
  applied (``pending_conf_index``), and it conservatively counts its whole log as possibly
  holding one when it takes office.
- UPDATE changes no voter (etcd's ConfChangeUpdateNode: peer URLs live in the caller).
"""

from __future__ import annotations

from typing import NamedTuple

CONF_ADD_NODE = "add"
CONF_REMOVE_NODE = "remove"
CONF_UPDATE_NODE = "update"


class ConfChange(NamedTuple):
    op: str  # CONF_ADD_NODE, CONF_REMOVE_NODE or CONF_UPDATE_NODE
    node_id: int


def apply_to(voters: list[int], cc: ConfChange) -> list[int]:
    """The voter list after ``cc``, sorted; the input is not modified."""
    if cc.op == CONF_ADD_NODE:
        return sorted(set(voters) | {cc.node_id})
    if cc.op == CONF_REMOVE_NODE:
        return sorted(set(voters) - {cc.node_id})
    if cc.op == CONF_UPDATE_NODE:
        return sorted(voters)
    raise ValueError(f"unknown configuration change {cc.op!r}")
