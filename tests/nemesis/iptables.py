"""Per-pair links for members that dial their peers themselves (etcd), with iptables.

Each member runs under its own uid (``setpriv``; no user account needed).  A mangle rule marks
every new connection with the mark of the member that dialed it (the owner of the first packet),
so every packet of a connection between two members tells who dialed, and the conntrack direction
tells which end sent it.  ``block(a, b)`` then drops in INPUT, silently (a pulled cable, not a
refusal), every packet ``a`` sends to ``b``: on connections ``a`` dialed to ``b``'s peer port, the
original direction; on connections ``b`` dialed to ``a``'s peer port, the reply direction.  What
``b`` sends to ``a`` still flows.  Client traffic (the harness runs as root, unmarked) never
matches.

Needs root and iptables with the owner, conntrack and connmark matches; ``available()`` says.
The chains are the cluster's own (named after the harness's pid and a counter) and are removed by
``close()``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

_counter = itertools.count()
UID_BASE = 47000


def _ipt(*args: str, table: str = "filter", check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "5", "-t", table, *args], capture_output=True, text=True, check=check
    )


def available() -> bool:
    if os.geteuid() != 0 or shutil.which("iptables") is None or shutil.which("setpriv") is None:
        return False
    chain = f"NEMPROBE{os.getpid() % 100000}"
    try:
        _ipt("-N", chain, table="mangle")
        try:
            _ipt("-A", chain, "-m", "owner", "--uid-owner", "0", "-m", "conntrack", "--ctstate", "NEW",
                 "-j", "CONNMARK", "--set-mark", "1", table="mangle")  # fmt: skip
            _ipt("-A", chain, "-m", "connmark", "--mark", "1", "-m", "conntrack", "--ctdir", "REPLY",
                 "--ctorigdstport", "1", "-j", "RETURN", table="mangle")  # fmt: skip
        finally:
            _ipt("-F", chain, table="mangle", check=False)
            _ipt("-X", chain, table="mangle", check=False)
    except (subprocess.CalledProcessError, OSError):
        return False
    return True


class IptablesLinks:
    def __init__(self) -> None:
        n = next(_counter)
        tag = f"{os.getpid() % 100000}{n}"
        self.mark_chain = f"NEMMARK{tag}"
        self.drop_chain = f"NEMDROP{tag}"
        # uids and marks unique per cluster of this harness process (and, by the pid, per harness).
        self.uid_base = UID_BASE + (os.getpid() % 1000) * 20 + (n % 2) * 10
        self.uids: dict[str, int] = {}
        self.peer_ports: dict[str, int] = {}
        _ipt("-N", self.mark_chain, table="mangle")
        _ipt("-I", "OUTPUT", "-j", self.mark_chain, table="mangle")
        _ipt("-N", self.drop_chain)
        _ipt("-I", "INPUT", "-j", self.drop_chain)

    def add_member(self, name: str, peer_port: int) -> int:
        """Registers a member; returns the uid it must run as (its connections get its mark)."""
        uid = self.uid_base + len(self.uids)
        self.uids[name] = uid
        self.peer_ports[name] = peer_port
        _ipt("-A", self.mark_chain, "-m", "owner", "--uid-owner", str(uid), "-m", "conntrack", "--ctstate", "NEW",
             "-j", "CONNMARK", "--set-mark", str(uid), table="mangle")  # fmt: skip
        return uid

    def block(self, src: str, dst: str) -> None:
        a, b = self.uids[src], self.uids[dst]
        _ipt("-A", self.drop_chain, "-p", "tcp", "-m", "connmark", "--mark", str(a), "-m", "conntrack",
             "--ctdir", "ORIGINAL", "--ctorigdstport", str(self.peer_ports[dst]), "-j", "DROP")  # fmt: skip
        _ipt("-A", self.drop_chain, "-p", "tcp", "-m", "connmark", "--mark", str(b), "-m", "conntrack",
             "--ctdir", "REPLY", "--ctorigdstport", str(self.peer_ports[src]), "-j", "DROP")  # fmt: skip

    def heal(self) -> None:
        _ipt("-F", self.drop_chain)

    def close(self) -> None:
        _ipt("-D", "INPUT", "-j", self.drop_chain, check=False)
        _ipt("-F", self.drop_chain, check=False)
        _ipt("-X", self.drop_chain, check=False)
        _ipt("-D", "OUTPUT", "-j", self.mark_chain, table="mangle", check=False)
        _ipt("-F", self.mark_chain, table="mangle", check=False)
        _ipt("-X", self.mark_chain, table="mangle", check=False)
