"""The frame value type and the command vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field

CLIENT_COMMANDS = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
    }
)
SERVER_COMMANDS = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
ALL_COMMANDS = CLIENT_COMMANDS | SERVER_COMMANDS

# STOMP 1.2 section "Frames and Headers": only these may carry a body.
BODY_COMMANDS = frozenset({"SEND", "MESSAGE", "ERROR"})

# CONNECT and CONNECTED headers are never escaped, for 1.0 compatibility.
UNESCAPED_COMMANDS = frozenset({"CONNECT", "STOMP", "CONNECTED"})

VERSIONS = ("1.0", "1.1", "1.2")


@dataclass(slots=True)
class Frame:
    """One STOMP frame. Header order is kept; on repeats the first value wins."""

    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)
