"""A gate: someone outside the node (a backend's connect, subscribe and publish
proxies) who decides about a CONNECT, a SUBSCRIBE or a SEND, and answers later.

The session asks and stops reading until the answer comes (so frames keep their
order and nothing piles up behind a slow backend), then goes on or fails. An
answer may come at once (a cached decision): then nothing pauses. The adapter
(``stompgate/proxy.py``) makes the HTTP calls; this stays free of I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .auth import Credentials
from .authz import Principal

# (who, None) when the CONNECT is accepted; (None, why) when refused.
ConnectDone = Callable[[Principal | None, str | None], None]
# None when the frame may go on; why when it may not.
CheckDone = Callable[[str | None], None]


class Gate(Protocol):
    connects: bool  # CONNECTs are decided by the gate, not the authenticator
    checks: frozenset[str]  # of SEND, SUBSCRIBE: the frames the gate decides on

    def connect(self, creds: Credentials, remote: str, done: ConnectDone) -> None: ...

    def check(
        self,
        frame: str,
        destination: str,
        principal: Principal,
        session_id: str,
        headers: dict[str, str],
        body: bytes,
        done: CheckDone,
    ) -> None: ...


class Pending:
    """One question to the gate, answered now or later (see ``Session._ask``), with
    what goes on once it allows (``go``) and how a refusal reads (``denied``, ``code``, ``cause``)."""

    __slots__ = ("go", "denied", "code", "cause", "receipt", "waiting", "answered", "error", "principal")

    def __init__(
        self,
        go: Callable[[Principal | None], None],
        denied: str,
        code: int,
        cause: str,
        receipt: str | None = None,
    ) -> None:
        self.go = go
        self.denied = denied
        self.code = code
        self.cause = cause  # the close reason of a refusal (broker/closes.py)
        self.receipt = receipt  # the asked frame's: a refusal's ERROR carries it as receipt-id
        self.waiting = False  # the session paused for it: the answer resumes the session
        self.answered = False
        self.error: str | None = None
        self.principal: Principal | None = None
