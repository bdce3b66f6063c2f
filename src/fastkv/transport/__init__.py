"""Peer traffic between members: the frame codec (codec), the connections (transport) and a
fault-injecting TCP proxy for tests (faultproxy)."""

from .codec import Decoder, FrameError, FrameTooLarge, encode, encode_message, encode_snapshot
from .transport import Transport, parse_peer_url

__all__ = [
    "Decoder",
    "FrameError",
    "FrameTooLarge",
    "Transport",
    "encode",
    "encode_message",
    "encode_snapshot",
    "parse_peer_url",
]
