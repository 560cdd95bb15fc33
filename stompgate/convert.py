"""Payload conversion for publishers (HTTP API, MessagingTemplate), as Spring's converters do."""

from __future__ import annotations

import json
from typing import Any


def to_body(payload: Any, headers: dict[str, str]) -> bytes:
    """str -> UTF-8 text, bytes -> octet-stream, anything else -> JSON; sets a default content-type."""
    if isinstance(payload, str):
        headers.setdefault("content-type", "text/plain;charset=UTF-8")
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        headers.setdefault("content-type", "application/octet-stream")
        return bytes(payload)
    headers.setdefault("content-type", "application/json")
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
