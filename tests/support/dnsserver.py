"""A small authoritative DNS server over UDP on 127.0.0.1, for SRV bootstrap tests.

``DNSServer(records)`` answers from a dict: owner name -> list of records, each record
``("SRV", priority, weight, port, target)``, ``("A", "127.0.0.1")`` or ``("AAAA", "::1")``.
A name absent from the dict is NXDOMAIN, a present name without the asked type an empty
NOERROR answer.  Every answer is authoritative.  Start it with ``start()`` (a daemon thread)
and aim fastkv at it with ``FASTKV_DNS_SERVER=127.0.0.1:<port>`` (``server.address``).
``records`` may be changed while it runs; ``queries`` lists every (name, type) asked.
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Record = tuple


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text if text.endswith(".") else text + ".")


class DNSServer:
    def __init__(self, records: dict[str, list[Record]], ttl: int = 5):
        self.records = records
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # lets stop() end the thread promptly
        self.port: int = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._stopped = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DNSServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self.answer(dns.message.from_wire(data))
            except Exception:  # noqa: BLE001 - a malformed query gets no answer
                continue
            try:
                self.sock.sendto(reply.to_wire(), peer)
            except OSError:
                return

    def _lookup(self, qname: dns.name.Name) -> list[Record] | None:
        for owner, recs in self.records.items():
            if _name(owner) == qname:
                return recs
        return None

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        question = query.question[0]
        qtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((question.name.to_text(), qtype))
        recs = self._lookup(question.name)
        if recs is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            return reply
        texts = [self._rdata_text(r) for r in recs if r[0] == qtype]
        if texts:
            rdatas = [dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, t) for t in texts]
            reply.answer.append(dns.rrset.from_rdata_list(question.name, self.ttl, rdatas))
        return reply

    @staticmethod
    def _rdata_text(rec: Record) -> str:
        if rec[0] == "SRV":
            _, priority, weight, port, target = rec
            target = target if target.endswith(".") else target + "."
            return f"{priority} {weight} {port} {target}"
        return str(rec[1])
