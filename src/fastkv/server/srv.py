"""Bootstrap from DNS SRV records (``--discovery-srv``, spec §4.3), and the client-side lookup.

A server looks up ``_etcd-server-ssl._tcp.<domain>`` (https peers) and ``_etcd-server._tcp.<domain>``
(http peers), or ``_etcd-server-ssl-<name>._tcp`` / ``_etcd-server-<name>._tcp`` with
``--discovery-srv-name <name>``, and combines both answers: either may be missing, only both
failing is an error (etcd 3.4 drops the http-only answer, issue #11321).  Each record's
``target:port`` is resolved to an address; the record whose address is one of this member's
``--initial-advertise-peer-urls`` (resolved the same way) gets this member's name, every other
record a placeholder name ``0``, ``1``, ... .  The URL keeps the target's name
(``http://<target>:<port>``), as etcd does.  The member must be among the records:
``cannot find local etcd member "<name>" in SRV records``.

Names are resolved with dnspython.  ``FASTKV_DNS_SERVER=host:port`` (port 53 when omitted) sends
every query (SRV and A) to that name server instead of the system's; without it SRV records come
from the system's name servers and host names go through the system resolver (``/etc/hosts``
included).  IP address targets are used as they are.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import socket
from collections.abc import Callable

import dns.exception
import dns.resolver

from .config import Config, _go_parse_url, _go_split_host_port, parse_initial_cluster

log = logging.getLogger("fastkv.srv")

DNS_SERVER_ENV = "FASTKV_DNS_SERVER"
DNS_TIMEOUT_S = 5.0


class SRVError(Exception):
    """SRV bootstrap failed; ``str()`` is the line to print."""


def make_resolver(environ: dict[str, str] | None = None) -> dns.resolver.Resolver:
    """A dnspython resolver, aimed at ``$FASTKV_DNS_SERVER`` when that is set."""
    env = os.environ if environ is None else environ
    target = env.get(DNS_SERVER_ENV, "")
    if not target:
        resolver = dns.resolver.Resolver()
    else:
        if target.startswith("["):  # [v6]:port or [v6]
            host, _, port = target[1:].partition("]")
            port = port.lstrip(":")
        elif target.count(":") == 1:
            host, _, port = target.partition(":")
        else:  # an IPv4 address, or a bare IPv6 address
            host, port = target, ""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = int(port) if port else 53
    resolver.lifetime = DNS_TIMEOUT_S
    resolver.timeout = DNS_TIMEOUT_S
    return resolver


def _custom(environ: dict[str, str] | None) -> bool:
    return bool((os.environ if environ is None else environ).get(DNS_SERVER_ENV))


class Lookup:
    """SRV and address lookups through one resolver (``environ`` picks it, see the module doc)."""

    def __init__(self, environ: dict[str, str] | None = None):
        self.resolver = make_resolver(environ)
        self.custom = _custom(environ)
        servers = [str(ns) for ns in self.resolver.nameservers]
        self.server = f"{servers[0]}:{self.resolver.port}" if servers else "(no name server)"

    def srv_records(self, service: str, domain: str) -> list[tuple[str, int]]:
        """(target as in the record, with its final dot, port) of ``_<service>._tcp.<domain>``."""
        name = f"_{service}._tcp.{domain.rstrip('.')}"
        try:
            answer = self.resolver.resolve(name + ".", "SRV", search=False)
        except dns.resolver.NXDOMAIN:
            raise LookupError(f"lookup {name} on {self.server}: no such host") from None
        except dns.resolver.NoAnswer:
            raise LookupError(f"lookup {name} on {self.server}: no such host") from None
        except dns.exception.DNSException as e:
            raise LookupError(f"lookup {name} on {self.server}: {e}") from None
        records = sorted(answer, key=lambda r: (r.priority, -r.weight))
        return [(r.target.to_text(), int(r.port)) for r in records]

    def srv(self, service: str, domain: str) -> list[tuple[str, int]]:
        """(target without the final dot, port) of ``_<service>._tcp.<domain>``, by priority."""
        return [(t.rstrip("."), p) for t, p in self.srv_records(service, domain)]

    def address(self, host: str) -> str:
        """The IP address of ``host`` (an IP literal is returned as it is)."""
        host = host.rstrip(".").strip("[]")
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        if self.custom:
            for rdtype in ("A", "AAAA"):
                try:
                    answer = self.resolver.resolve(host + ".", rdtype, search=False)
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    continue
                except dns.exception.DNSException as e:
                    raise LookupError(f"lookup {host}: {e}") from None
                return str(next(iter(answer)).address)  # type: ignore[attr-defined]
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as e:
            raise LookupError(f"lookup {host}: no such host ({e.strerror or e})") from None
        infos.sort(key=lambda i: i[0] != socket.AF_INET)  # Go prefers IPv4
        return str(infos[0][4][0])


def _tcp_addr(lookup: Lookup, host: str, port: int) -> str:
    addr = lookup.address(host)
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def get_cluster(
    name: str,
    domain: str,
    service_name: str,
    advertise_peer_urls: list[str],
    lookup: Lookup,
) -> list[str]:
    """``name=scheme://target:port`` entries for the domain's peer SRV records (https then http)."""
    own: dict[str, str] = {}  # resolved "ip:port" -> URL
    for url in advertise_peer_urls:
        _, hostport, _, _ = _go_parse_url(url)
        host, own_port = _go_split_host_port(hostport)
        try:
            own[_tcp_addr(lookup, host, int(own_port or 0))] = url
        except LookupError as e:
            raise SRVError(f"error setting up initial cluster: {e}") from None
    suffix = f"-{service_name}" if service_name else ""
    parts: list[str] = []
    errors: list[str] = []
    placeholder = 0
    for scheme, service in (("https", "etcd-server-ssl" + suffix), ("http", "etcd-server" + suffix)):
        found: list[str] = []
        error = ""
        try:
            records = lookup.srv(service, domain)
        except LookupError as e:
            errors.append(f"error querying DNS SRV records for _{service} {e}")
            continue
        for target, port in records:
            try:
                addr = _tcp_addr(lookup, target, port)
            except LookupError as e:
                error = str(e)
                continue
            mine = own.get(addr)
            url = f"{scheme}://{_join_host_port(target, port)}"
            if mine is not None and urlsplit_scheme(mine) != scheme:
                error = (
                    f"bootstrap at {url} from DNS for {service} has scheme mismatch with expected peer {mine}"
                )
                continue
            if mine is not None:
                member = name
            else:
                member, placeholder = str(placeholder), placeholder + 1
            found.append(f"{member}={url}")
        if not found and error:
            errors.append(f"error querying DNS SRV records for _{service} {error}")
        parts.extend(found)
    if not parts:
        raise SRVError("error setting up initial cluster: " + "; ".join(errors))
    for text in errors:
        log.info("%s", text)
    return parts


def urlsplit_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def bootstrap_config(cfg: Config, environ: dict[str, str] | None = None) -> Config:
    """The member's ``Config`` with ``initial_cluster`` taken from the domain's SRV records.

    Member ids are salted with ``--initial-cluster-token`` as for a static cluster.  Raises
    ``SRVError`` with etcd's texts.
    """
    lookup = Lookup(environ)
    entries = get_cluster(
        cfg.name, cfg.discovery_srv, cfg.discovery_srv_name, cfg.initial_advertise_peer_urls, lookup
    )
    for e in entries:
        log.info("got bootstrap from DNS for etcd-server: %s", e)
    try:
        pairs = parse_initial_cluster(",".join(entries))
    except ValueError as e:
        raise SRVError(f"error setting up initial cluster: {e}") from None
    if cfg.name not in {n for n, _ in pairs}:
        raise SRVError(
            f'error setting up initial cluster: cannot find local etcd member "{cfg.name}" in SRV records'
        )
    return dataclasses.replace(cfg, initial_cluster=pairs)


def client_endpoints(
    domain: str,
    service_name: str = "",
    insecure: bool = False,
    warn: Callable[[str], object] | None = None,
    environ: dict[str, str] | None = None,
) -> list[str]:
    """Client URLs from ``_etcd-client-ssl._tcp`` and ``_etcd-client._tcp`` (etcdctl's ``-D``).

    As in etcd's client, the target keeps the record's final dot (``https://m0.example.com.:2379``).
    ``http://`` results are dropped unless ``insecure``, each with
    ``ignoring discovered insecure endpoint "<url>"`` passed to ``warn``.  Raises ``LookupError``
    (``dns lookup errors: <https error> and <http error>``) when neither record set exists.
    """
    lookup = Lookup(environ)
    suffix = f"-{service_name}" if service_name else ""
    urls: list[str] = []
    errors: list[str] = []
    for scheme, service in (("https", "etcd-client-ssl" + suffix), ("http", "etcd-client" + suffix)):
        try:
            records = lookup.srv_records(service, domain)
        except LookupError as e:
            errors.append(str(e))
            continue
        urls.extend(f"{scheme}://{_join_host_port(t, p)}" for t, p in records)
    if len(errors) == 2:
        raise LookupError(f"dns lookup errors: {errors[0]} and {errors[1]}")
    kept: list[str] = []
    for url in urls:
        if url.startswith("http://") and not insecure:
            if warn is not None:
                warn(f'ignoring discovered insecure endpoint "{url}"')
            continue
        kept.append(url)
    return kept


def without_final_dot(url: str) -> str:
    """``scheme://host.:port`` -> ``scheme://host:port``: names from /etc/hosts (``localhost``)
    do not resolve with the final dot, names in DNS resolve either way."""
    scheme, sep, rest = url.partition("://")
    host, colon, port = rest.rpartition(":")
    if host.endswith(".") and colon and port.isdigit():
        return f"{scheme}{sep}{host[:-1]}:{port}"
    return url


__all__ = [
    "DNS_SERVER_ENV",
    "Lookup",
    "SRVError",
    "bootstrap_config",
    "client_endpoints",
    "get_cluster",
    "without_final_dot",
]
