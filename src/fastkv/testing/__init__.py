"""Real fastkv processes for tests: members and clusters on free 127.0.0.1 ports in a temporary
directory, with kill -9, stop, restart, pause (SIGSTOP) and resume, leader lookup and clients.

``fastkv.testing.plugin`` turns this into pytest fixtures (``fastkv_member``, ``fastkv_cluster``,
``fastkv_launcher``); it is registered through the ``pytest11`` entry point, so installing fastkv
is enough.  Without pytest::

    with Launcher() as launcher:
        cluster = launcher.cluster(3)
        cluster.leader().kill()
        cluster.client().set("/k", "v")
"""

from fastkv.testing.cluster import FAST_TIMING, Cluster, Launcher, default_command, member_environment
from fastkv.testing.member import Member, MemberError, poll
from fastkv.testing.ports import free_port

__all__ = [
    "FAST_TIMING",
    "Cluster",
    "Launcher",
    "Member",
    "MemberError",
    "default_command",
    "free_port",
    "member_environment",
    "poll",
]
