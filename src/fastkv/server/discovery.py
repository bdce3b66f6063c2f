"""Bootstrap through etcd's discovery protocol (``--discovery``, spec §4.2).

A discovery service is any etcd v2 keys endpoint (fastkv or etcd).  The ``--discovery`` URL is
``scheme://host:port/<token path>``: requests go to ``scheme://host:port`` and ``<token path>``
(``/v2/keys/_etcd/registry/<token>`` by convention) is the directory the members meet in.  The
operator creates ``<token>/_config/size`` first.  Each new member then, as etcd's
``v2discovery`` does:

1. reads the size (404 -> ``discovery: size key not found``, not an unsigned decimal ->
   ``discovery: size key is bad``, an answer that is not etcd's JSON -> ``discovery: bad
   discovery endpoint``) and lists the token; when ``size`` others are registered before it in
   ``createdIndex`` order, it stops before registering: ``discovery: cluster is full``;
2. registers ``<token>/<member id hex>`` with ``prevExist=false`` and the value
   ``name=peerURL[,name=peerURL2]``; an existing key is ``discovery: found duplicate id`` (a
   member that crashed after registering but before writing its WAL gets this too, like etcd:
   the token cannot be reused);
3. waits until its own key is visible, lists the token again and watches it recursively from
   the listing's ``X-Etcd-Index`` until ``size`` members are registered;
4. returns the first ``size`` registrations joined with ``,``: names must be distinct
   (``discovery: found duplicate name``) and URLs valid (``discovery: invalid URL``).

Connection failures and 5xx answers are retried after ``backoff_base * 2**n`` seconds (n capped
at 8, etcd's 2^n s up to 256 s), without limit unless ``max_retries`` is given.  One difference
from etcd on purpose: while waiting, only events that create a registration count (etcd counts
every event under the token, so a deleted key would count as a member).
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

from .config import Config, _cluster_string, parse_initial_cluster
from .etcdserver import StartupError
from .identity import format_id, member_id_for

log = logging.getLogger("fastkv.discovery")

# etcd's v2discovery error texts (byte for byte).
ERR_INVALID_URL = "discovery: invalid URL"
ERR_BAD_SIZE_KEY = "discovery: size key is bad"
ERR_SIZE_NOT_FOUND = "discovery: size key not found"
ERR_DUPLICATE_ID = "discovery: found duplicate id"
ERR_DUPLICATE_NAME = "discovery: found duplicate name"
ERR_FULL_CLUSTER = "discovery: cluster is full"
ERR_TOO_MANY_RETRIES = "discovery: too many retries"
ERR_BAD_DISCOVERY_ENDPOINT = "discovery: bad discovery endpoint"
# The Go client's text for an answer that is not etcd's JSON (outside the size lookup).
ERR_INVALID_JSON = (
    "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint."
)

MAX_EXPONENTIAL_RETRIES = 8
REQUEST_TIMEOUT_S = 5.0  # the Go client's DefaultRequestTimeout
ERROR_CODE_KEY_NOT_FOUND = 100
ERROR_CODE_NODE_EXIST = 105


class DiscoveryError(StartupError):
    """Discovery failed: ``str()`` is etcd's ``failed to join discovery cluster (<reason>)``.

    ``reason`` is the bare error (one of the ``ERR_*`` texts, or the endpoint's own error).
    """

    def __init__(self, reason: str, op: str = "join"):
        super().__init__(f"failed to {op} discovery cluster ({reason})")
        self.reason = reason
        self.op = op


class _Failure(Exception):
    """An error inside the protocol; ``retryable`` ones are connection errors and 5xx answers."""

    def __init__(self, reason: str, retryable: bool = False, code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.code = code


class _Response:
    """A decoded keys API answer: the ``node`` dict, ``action`` and the ``X-Etcd-Index``."""

    def __init__(self, body: dict[str, Any], index: int):
        node = body.get("node")
        if not isinstance(node, dict):
            raise _Failure(ERR_INVALID_JSON)
        self.node: dict[str, Any] = node
        self.action: str = str(body.get("action", ""))
        self.index = index


def _base(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


def _proxy_url(proxy: str) -> str:
    """``--discovery-proxy`` as etcd reads it: ``host:port`` means ``http://host:port``."""
    if urllib.parse.urlsplit(proxy).scheme.startswith("http"):
        return proxy
    candidate = "http://" + proxy
    try:
        urllib.parse.urlsplit(candidate).port  # noqa: B018 - validates the port
    except ValueError as e:
        raise StartupError(f"invalid proxy address {proxy!r}: {e}") from None
    return candidate


class Discovery:
    """One member's run of the protocol against the discovery URL ``durl``.

    ``proxy`` is ``--discovery-proxy`` ("" = no proxy, and the environment's proxies are not
    used either).  ``sleep`` and ``backoff_base`` exist so that tests need not wait seconds.
    """

    def __init__(
        self,
        durl: str,
        member_id: int,
        proxy: str = "",
        backoff_base: float = 1.0,
        max_retries: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        u = urllib.parse.urlsplit(durl)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise DiscoveryError(f'parse "{durl}": expected an http(s) discovery URL')
        self.endpoint = f"{u.scheme}://{u.netloc}"
        self.cluster = "/" + u.path.strip("/")
        self.url = durl
        self.member_id = member_id
        self.backoff_base = backoff_base
        self.max_retries = max_retries
        self.retries = 0
        self._sleep = sleep
        proxies = {"http": _proxy_url(proxy), "https": _proxy_url(proxy)} if proxy else {}
        if proxy:
            log.info("running proxy with discovery: %s", proxies["http"])
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    @property
    def self_key(self) -> str:
        return f"{self.cluster.rstrip('/')}/{format_id(self.member_id)}"

    # -- HTTP ------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        timeout: float | None = REQUEST_TIMEOUT_S,
    ) -> _Response | None:
        """One keys API call; None for an empty 200 (a watch that ended without an event)."""
        url = self.endpoint + urllib.parse.quote(path)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers = e.code, e.headers
            try:
                body = e.read()
            except (OSError, http.client.HTTPException) as err:
                raise _Failure(f"{method} {url}: {err}", retryable=True) from None
        except (OSError, ValueError, http.client.HTTPException) as e:  # refused, reset, cut short
            reason = getattr(e, "reason", None) or e
            raise _Failure(f"{method} {url}: {reason}", retryable=True) from None
        if status // 100 == 5:
            raise _Failure(f"client: etcd member {self.endpoint} returns server error [{status}]", True)
        try:
            decoded = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            raise _Failure(ERR_INVALID_JSON) from None
        if status in (200, 201):
            if decoded is None:
                return None
            if not isinstance(decoded, dict):
                raise _Failure(ERR_INVALID_JSON)
            try:
                index = int(headers.get("X-Etcd-Index") or 0)
            except ValueError:
                raise _Failure(ERR_INVALID_JSON) from None
            return _Response(decoded, index)
        if not isinstance(decoded, dict) or "errorCode" not in decoded:
            raise _Failure(ERR_INVALID_JSON)
        code = decoded.get("errorCode")
        # client.Error.Error() in Go: "<code>: <message> (<cause>) [<index>]"
        text = (
            f"{code}: {decoded.get('message', '')} ({decoded.get('cause', '')}) [{decoded.get('index', 0)}]"
        )
        raise _Failure(text, code=code if isinstance(code, int) else None)

    def _get(self, path: str) -> _Response:
        resp = self._request("GET", path)
        if resp is None:
            raise _Failure(ERR_INVALID_JSON)
        return resp

    def _watch(self, path: str, after_index: int, recursive: bool) -> _Response:
        """The next event under ``path`` after ``after_index`` (a Go client ``Watcher.Next``)."""
        query = {"wait": "true", "waitIndex": str(after_index + 1)}
        if recursive:
            query["recursive"] = "true"
        while True:
            resp = self._request("GET", path, query, timeout=None)
            if resp is not None:
                return resp

    def _backoff(self, step: str) -> None:
        if self.max_retries is not None and self.retries >= self.max_retries:
            raise DiscoveryError(ERR_TOO_MANY_RETRIES)
        self.retries += 1
        delay = self.backoff_base * (1 << min(self.retries, MAX_EXPONENTIAL_RETRIES))
        log.info("retry connecting to discovery service %s (%s) in %gs", self.url, step, delay)
        self._sleep(delay)

    # -- the protocol ----------------------------------------------------------------------

    def join_cluster(self, config: str) -> str:
        """Register ``config`` (``name=url,...``) and return the discovered initial cluster."""
        try:
            self._check_cluster()  # fast path: a full cluster is refused before registering
            self._create_self(config)
            nodes, size, index = self._check_cluster()
            everyone = self._wait_nodes(nodes, size, index)
        except _Failure as e:
            raise DiscoveryError(e.reason) from None
        return _nodes_to_cluster(everyone, size)

    def _check_cluster(self) -> tuple[list[dict[str, Any]], int, int]:
        """(registrations sorted by createdIndex, size, X-Etcd-Index of the listing)."""
        while True:
            try:
                return self._check_cluster_once()
            except _Failure as e:
                if not e.retryable:
                    raise
                log.warning("failed to get from discovery server %s: %s", self.url, e.reason)
                self._backoff("cluster status check")

    def _check_cluster_once(self) -> tuple[list[dict[str, Any]], int, int]:
        config_key = f"{self.cluster.rstrip('/')}/_config"
        try:
            resp = self._get(config_key + "/size")
        except _Failure as e:
            if e.code == ERROR_CODE_KEY_NOT_FOUND:
                raise _Failure(ERR_SIZE_NOT_FOUND) from None
            if e.reason == ERR_INVALID_JSON:
                raise _Failure(ERR_BAD_DISCOVERY_ENDPOINT) from None
            raise
        value = resp.node.get("value")
        # strconv.ParseUint(value, 10, 0): ASCII digits only, no sign, at most 2^64-1.
        if not isinstance(value, str) or not value.isascii() or not value.isdigit() or int(value) >= 1 << 64:
            raise _Failure(ERR_BAD_SIZE_KEY)
        size = int(value)
        listing = self._get(self.cluster)
        nodes = [n for n in listing.node.get("nodes") or [] if _base(str(n.get("key", ""))) != "_config"]
        nodes.sort(key=lambda n: int(n.get("createdIndex", 0)))
        me = _base(self.self_key)
        for i, n in enumerate(nodes):
            if _base(str(n.get("key", ""))) == me:
                break
            if size > 0 and i >= size - 1:  # Go compares against the unsigned size-1
                raise _Failure(ERR_FULL_CLUSTER)
        return nodes, size, listing.index

    def _create_self(self, config: str) -> None:
        try:
            resp = self._request("PUT", self.self_key, {"prevExist": "false"}, {"value": config})
        except _Failure as e:
            if e.code == ERROR_CODE_NODE_EXIST:
                raise _Failure(ERR_DUPLICATE_ID) from None
            raise
        if resp is None:
            raise _Failure(ERR_INVALID_JSON)
        # Make sure the registration is visible on the server we talk to.
        self._watch(self.self_key, int(resp.node.get("createdIndex", 1)) - 1, recursive=False)

    def _wait_nodes(self, nodes: list[dict[str, Any]], size: int, index: int) -> list[dict[str, Any]]:
        while True:
            try:
                return self._wait_nodes_once(nodes, size, index)
            except _Failure as e:
                if not e.retryable:
                    raise
                log.warning("error while waiting for peers on %s: %s", self.url, e.reason)
                self._backoff("waiting for other nodes")
                nodes, size, index = self._check_cluster()

    def _wait_nodes_once(self, nodes: list[dict[str, Any]], size: int, index: int) -> list[dict[str, Any]]:
        everyone = list(nodes[:size])
        seen = {_base(str(n.get("key", ""))) for n in everyone}
        for n in everyone:
            who = "self" if _base(str(n.get("key", ""))) == _base(self.self_key) else "peer"
            log.info("found %s %s from discovery server", who, _base(str(n.get("key", ""))))
        cluster = self.cluster.rstrip("/")
        while len(everyone) < size:
            log.info(
                "found %d peers from discovery server; waiting for %d more",
                len(everyone),
                size - len(everyone),
            )
            ev = self._watch(self.cluster, index, recursive=True)
            index = int(ev.node.get("modifiedIndex", index + 1))
            key = str(ev.node.get("key", ""))
            parent, _, name = key.rstrip("/").rpartition("/")
            # Store keys lack the URL's /v2/keys prefix: a registration is a child of the token.
            is_registration = bool(parent) and cluster.endswith(parent) and name != "_config"
            if ev.action in ("create", "set") and is_registration and name not in seen:
                seen.add(name)
                everyone.append(ev.node)
                log.info("found peer %s from discovery server", name)
        log.info("found all %d needed peers from discovery server", len(everyone))
        return everyone


def _nodes_to_cluster(nodes: list[dict[str, Any]], size: int) -> str:
    joined = ",".join(str(n.get("value", "")) for n in nodes)
    try:
        pairs = parse_initial_cluster(joined)
    except ValueError:
        raise DiscoveryError(ERR_INVALID_URL) from None
    if len({name for name, _ in pairs}) != size:
        raise DiscoveryError(ERR_DUPLICATE_NAME)
    return joined


def bootstrap_config(cfg: Config, backoff_base: float = 1.0) -> Config:
    """The member's ``Config`` with ``initial_cluster`` filled in by ``--discovery``.

    The member registers ``<name>=<each --initial-advertise-peer-url>`` under its id, which is
    derived with the discovery URL as token (spec §3.3); ``discovery`` stays set in the result
    so the server derives every id the same way.  Raises ``DiscoveryError``/``StartupError``.
    """
    own = sorted(cfg.initial_advertise_peer_urls)
    member_id = member_id_for(own, cfg.discovery)
    config = ",".join(f"{cfg.name}={u}" for u in own)
    log.info("joining discovery cluster %s as %s (%s)", cfg.discovery, format_id(member_id), config)
    disc = Discovery(cfg.discovery, member_id, cfg.discovery_proxy, backoff_base=backoff_base)
    joined = disc.join_cluster(config)
    pairs = parse_initial_cluster(joined) if joined else []
    urls = [u for _, u in pairs]
    if len(set(urls)) != len(urls):
        raise StartupError(f"discovery cluster {_cluster_string(pairs)} has duplicate url")
    log.info("discovered initial cluster %s", joined)
    return dataclasses.replace(cfg, initial_cluster=pairs)


__all__ = ["Discovery", "DiscoveryError", "bootstrap_config"]
