"""``/fastkv/mirror``: where ``fastkvctl mirror`` writes another v2 server's data with its own indexes.

Not part of etcd's API (hence the ``/fastkv/`` prefix): ``GET`` answers the mirror state of the member
(``{"state": "none" | "following" | "finished", "source", "index", "storeIndex"}``); ``POST`` takes one
JSON batch (v2store/mirror.py says what it holds), replicates it and answers the state after it.  A
refused batch is a v2 error body with its status (a cluster that took writes of its own: 107 "Root is read only", HTTP 400).
With v2 auth on, only root may use it (both methods).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..server.interface import V2Server
from ..v2store.errors import INVALID_FIELD, V2Error
from .keys import MAX_FORM_SIZE
from .response import CT_JSON, METHOD_NOT_ALLOWED_BODY, PLAIN_ERROR_HEADERS

Reply = Callable[..., None]
PATH = "/fastkv/mirror"
MAX_BATCH_BYTES = MAX_FORM_SIZE


def serve_mirror(server: V2Server, reply: Reply, method: str, body: bytes, too_large: bool = False) -> None:
    if method == "GET":
        return reply(200, CT_JSON, orjson.dumps(server.mirror_status()) + b"\n")
    if method != "POST":
        return reply(405, PLAIN_ERROR_HEADERS + b"Allow: GET, POST\r\n", METHOD_NOT_ALLOWED_BODY)
    if too_large:
        return _error(reply, V2Error(INVALID_FIELD, f"mirror: a batch is at most {MAX_BATCH_BYTES} bytes"))
    try:
        batch = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        return _error(reply, V2Error(INVALID_FIELD, f"mirror: the batch is not JSON ({err})"))
    if not isinstance(batch, dict):
        return _error(reply, V2Error(INVALID_FIELD, "mirror: the batch is not a JSON object"))

    def done(state: Any, err: V2Error | None) -> None:
        if err is not None:
            return _error(reply, err)
        reply(200, CT_JSON, orjson.dumps(state) + b"\n")

    server.mirror_apply(batch, done)


def _error(reply: Reply, err: V2Error) -> None:
    reply(err.status, CT_JSON, err.to_json())
