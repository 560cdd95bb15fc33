"""stomp.py 9, a real third-party STOMP client, against real stompgate nodes.

Each test drives stomp.py over plain TCP (``stomp.Connection10/11/12``) and over
WebSocket (``stomp.WSConnection``), so what is checked is what a Python
application using stomp.py sees. Every wait is bounded by ``TIMEOUT`` and fails
with what had arrived so far. Where nothing may arrive, a later "fence" message
on the same connection proves it (one connection's frames arrive in order);
no test sleeps and hopes.

Unacknowledged messages are not redelivered by a simple broker, so the effect of
ACK and NACK is observed through ``stomp.max_unacked``: a delivery that would
leave more messages unacknowledged than that ends the session with an ERROR.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import stomp
import websocket
from stomp.adapter.ws import WSTransport
from stomp.connect import BaseConnection
from stomp.protocol import Protocol10, Protocol11
from stomp.utils import Frame, parse_frame

from harness.clusterkit import api
from harness.nodes import NodeProcess

TIMEOUT = 5.0
TRANSPORTS = ["tcp", "ws"]
VERSIONS = ["1.0", "1.1", "1.2"]
JWT_SECRET = "s3cret-for-the-stomppy-tests-0123456789"  # >= 32 bytes, as HS256 wants


# --------------------------------------------------------------------- listener


class Recorder(stomp.ConnectionListener):
    """Everything one stomp.py connection receives, with bounded waits for the test thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.connected_frame: Frame | None = None
        self.messages: list[Frame] = []
        self.receipts: list[str] = []
        self.errors: list[Frame] = []
        self.log: list[tuple[str, Any]] = []  # (command, body or receipt id), in arrival order
        self.heartbeats = 0
        self.disconnected = False
        self._read = 0  # messages already returned by next_message()

    # stomp.py callbacks (its receiver thread)

    def on_connected(self, frame: Frame) -> None:
        with self._cond:
            self.connected_frame = frame
            self._cond.notify_all()

    def on_message(self, frame: Frame) -> None:
        with self._cond:
            self.messages.append(frame)
            self.log.append(("MESSAGE", frame.body))
            self._cond.notify_all()

    def on_receipt(self, frame: Frame) -> None:
        with self._cond:
            self.receipts.append(frame.headers["receipt-id"])
            self.log.append(("RECEIPT", frame.headers["receipt-id"]))
            self._cond.notify_all()

    def on_error(self, frame: Frame) -> None:
        with self._cond:
            self.errors.append(frame)
            self.log.append(("ERROR", frame.headers.get("message")))
            self._cond.notify_all()

    def on_heartbeat(self) -> None:
        with self._cond:
            self.heartbeats += 1

    def on_disconnected(self) -> None:
        with self._cond:
            self.disconnected = True
            self._cond.notify_all()

    # waits (test thread)

    def summary(self) -> str:
        bodies = repr([m.body for m in self.messages])[:300]
        errors = [e.headers.get("message") for e in self.errors]
        return (
            f"connected={self.connected_frame is not None}, messages={bodies}, "
            f"receipts={self.receipts}, errors={errors}, disconnected={self.disconnected}"
        )

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        if not self.wait_for(predicate, timeout):
            raise AssertionError(f"no {what} within {timeout:g} s; so far: {self.summary()}")

    def next_message(self, timeout: float = TIMEOUT) -> Frame:
        self.wait("MESSAGE", lambda: len(self.messages) > self._read, timeout)
        frame = self.messages[self._read]
        self._read += 1
        return frame

    def receipt(self, receipt_id: str, timeout: float = TIMEOUT) -> None:
        self.wait(f"RECEIPT {receipt_id!r}", lambda: receipt_id in self.receipts, timeout)

    def error(self, timeout: float = TIMEOUT) -> Frame:
        self.wait("ERROR frame", lambda: bool(self.errors), timeout)
        return self.errors[0]

    def wait_disconnected(self, timeout: float = TIMEOUT) -> None:
        self.wait("disconnection", lambda: self.disconnected, timeout)

    def stays_connected(self, seconds: float) -> bool:
        """True when neither an ERROR nor a disconnection happens within ``seconds``."""
        return not self.wait_for(lambda: self.disconnected or bool(self.errors), seconds)


# ------------------------------------------------------------------- connections


def _ws_connection_class(protocol: type) -> type:
    """stomp.py's WebSocket transport under its 1.0 or 1.1 protocol class.

    ``stomp.WSConnection`` is fixed to 1.2; this is the same composition
    (``BaseConnection`` + transport + protocol) with an older protocol.
    """

    class WSConnectionOlder(BaseConnection, protocol):  # type: ignore[misc, valid-type]
        def __init__(self, transport: WSTransport, **protocol_kw: Any) -> None:
            BaseConnection.__init__(self, transport)
            protocol.__init__(self, transport, **protocol_kw)

        def connect(self, *args: Any, **kwargs: Any) -> None:
            self.transport.start()
            protocol.connect(self, *args, **kwargs)

        def disconnect(self, receipt: str | None = None, headers: Any = None, **kw: Any) -> None:
            protocol.disconnect(self, receipt, headers, **kw)
            if receipt is not None:
                self.transport.stop()

    return WSConnectionOlder


WSConnection10 = _ws_connection_class(Protocol10)
WSConnection11 = _ws_connection_class(Protocol11)
TCP_CLASSES = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}


def make_connection(
    node: NodeProcess,
    transport: str,
    version: str,
    heartbeats: tuple[int, int],
    auto_decode: bool,
    binary: bool,
    handshake_headers: dict[str, str] | None,
) -> Any:
    """A stomp.py connection object, not yet connected."""
    common: dict[str, Any] = {"auto_decode": auto_decode, "reconnect_attempts_max": 1}
    if version != "1.0":
        common["heartbeats"] = heartbeats
    if transport == "tcp":
        return TCP_CLASSES[version]([("127.0.0.1", node.tcp_port)], **common)
    header = {"Sec-WebSocket-Protocol": f"v{version.replace('.', '')}.stomp", **(handshake_headers or {})}
    hosts = [("127.0.0.1", node.port)]
    if version == "1.2":
        return stomp.WSConnection(hosts, ws_path="/ws", header=header, binary_mode=binary, **common)
    ws = WSTransport(
        hosts,
        ws_path="/ws",
        header=header,
        binary_mode=binary,
        auto_decode=auto_decode,
        reconnect_attempts_max=1,
    )
    if version == "1.1":
        return WSConnection11(ws, heartbeats=heartbeats)
    return WSConnection10(ws)


class Client:
    """One stomp.py connection with its Recorder; helpers wait for the RECEIPT of what they send."""

    def __init__(self, conn: Any, node: NodeProcess, transport: str, version: str) -> None:
        self.conn = conn
        self.node = node
        self.transport = transport
        self.version = version
        self.rec = Recorder()
        conn.set_listener("recorder", self.rec)
        self._receipt_no = 0

    def __repr__(self) -> str:
        return f"<stomp.py {self.transport} {self.version}>"

    def _receipt_id(self, what: str) -> str:
        self._receipt_no += 1
        return f"{what}-{self._receipt_no}"

    @property
    def connected(self) -> Frame:
        assert self.rec.connected_frame is not None, f"{self} is not connected: {self.rec.summary()}"
        return self.rec.connected_frame

    def node_log(self) -> str:
        return f"\n--- node log (tail) ---\n{self.node.log()[-3000:]}"

    def wait_connected(self) -> Frame:
        rec = self.rec
        try:
            rec.wait("CONNECTED", lambda: bool(rec.connected_frame or rec.errors) or rec.disconnected)
        except AssertionError as exc:
            raise AssertionError(f"{self}: {exc}{self.node_log()}") from None
        if rec.connected_frame is None:
            raise AssertionError(f"{self}: refused instead of CONNECTED: {rec.summary()}{self.node_log()}")
        return rec.connected_frame

    def subscribe(self, destination: str, sub_id: str | None = "1", ack: str = "auto") -> None:
        rid = self._receipt_id("sub")
        self.conn.subscribe(destination, id=sub_id, ack=ack, receipt=rid)
        self.rec.receipt(rid)

    def unsubscribe(self, sub_id: str) -> None:
        rid = self._receipt_id("unsub")
        self.conn.unsubscribe(id=sub_id, receipt=rid)
        self.rec.receipt(rid)

    def send(
        self,
        destination: str,
        body: str | bytes,
        *,
        headers: dict[str, str] | None = None,
        wait: bool = True,
        **kw: Any,
    ) -> None:
        """SEND; with ``wait``, return once its RECEIPT is back (the message is routed by then).

        ``kw`` goes to stomp.py's ``send`` (``content_type``, ``transaction``).
        """
        headers = dict(headers or {})
        if wait:
            headers["receipt"] = rid = self._receipt_id("send")
        self.conn.send(destination, body, headers=headers, **kw)
        if wait:
            self.rec.receipt(rid)

    def ack(self, message: Frame, *, nack: bool = False, transaction: str | None = None) -> None:
        """ACK or NACK ``message`` in this version's form.

        1.2 names the message by the MESSAGE's ``ack`` header alone (stomp.py 9's
        ``Protocol12.ack(id, transaction, receipt)``); 1.1 by ``message-id`` plus
        ``subscription``.
        """
        rid = self._receipt_id("nack" if nack else "ack")
        method = self.conn.nack if nack else self.conn.ack
        if self.version == "1.2":
            method(message.headers["ack"], transaction=transaction, receipt=rid)
        else:
            names = message.headers["message-id"], message.headers["subscription"]
            method(*names, transaction=transaction, receipt=rid)
        self.rec.receipt(rid)

    def begin(self) -> str:
        rid = self._receipt_id("begin")
        tx = self.conn.begin(receipt=rid)
        self.rec.receipt(rid)
        return tx

    def commit(self, tx: str) -> None:
        rid = self._receipt_id("commit")
        self.conn.commit(tx, receipt=rid)
        self.rec.receipt(rid)

    def abort(self, tx: str) -> None:
        rid = self._receipt_id("abort")
        self.conn.abort(tx, receipt=rid)
        self.rec.receipt(rid)

    def next_message(self) -> Frame:
        return self.rec.next_message()

    def bodies(self, n: int) -> list[Any]:
        return [self.rec.next_message().body for _ in range(n)]

    def messages_until(self, fence_body: str) -> list[Frame]:
        """Messages received before the one whose body is ``fence_body``."""
        out = []
        while (frame := self.rec.next_message()).body != fence_body:
            out.append(frame)
        return out

    def assert_alive(self) -> None:
        """A round trip through the broker still works and nothing went wrong."""
        self.subscribe("/topic/alive-check", sub_id="alive-check")
        self.send("/topic/alive-check", "still here")
        assert self.messages_until("still here") == []
        assert not self.rec.errors and not self.rec.disconnected, self.rec.summary()

    def disconnect(self, receipt: str = "bye") -> None:
        """stomp.py's graceful DISCONNECT (it blocks until the receipt), bounded by a thread join."""
        worker = threading.Thread(target=self.conn.disconnect, kwargs={"receipt": receipt}, daemon=True)
        worker.start()
        worker.join(TIMEOUT)
        assert not worker.is_alive(), f"{self}: disconnect() blocked {TIMEOUT:g} s: {self.rec.summary()}"
        self.rec.receipt(receipt)
        self.rec.wait_disconnected()

    def close(self) -> None:
        """Teardown: DISCONNECT when still connected, then drop the socket whatever happened."""
        try:
            if self.conn.is_connected():
                self.conn.disconnect()  # non-blocking without an explicit receipt
                self.rec.wait_for(lambda: self.rec.disconnected, 2)
        except Exception:  # noqa: BLE001 - teardown goes on to drop the socket whatever failed
            pass
        try:
            self.conn.transport.disconnect_socket()
        except Exception:  # noqa: BLE001 - teardown: the socket may already be gone
            pass


@pytest.fixture
def clients(node_factory: Callable[..., NodeProcess]) -> Iterator[Callable[..., Client]]:
    """Open stomp.py connections (CONNECTED awaited unless ``wait=False``); all closed at teardown.

    It depends on ``node_factory`` so the clients close before the nodes stop.
    """
    opened: list[Client] = []

    def open_client(
        node: NodeProcess,
        transport: str = "tcp",
        *,
        version: str = "1.2",
        login: str | None = "alice",
        passcode: str | None = None,
        connect_headers: dict[str, str] | None = None,
        handshake_headers: dict[str, str] | None = None,
        heartbeats: tuple[int, int] = (0, 0),
        binary: bool = False,
        auto_decode: bool = True,
        wait: bool = True,
    ) -> Client:
        conn = make_connection(node, transport, version, heartbeats, auto_decode, binary, handshake_headers)
        client = Client(conn, node, transport, version)
        opened.append(client)
        try:
            conn.connect(login, passcode, wait=False, headers=connect_headers)
        except Exception as exc:
            raise AssertionError(f"{client}: connecting failed: {exc!r}{client.node_log()}") from exc
        if wait:
            client.wait_connected()
        return client

    yield open_client
    for client in opened:
        client.close()


# ------------------------------------------------------------------ raw sockets


class RawConnection:
    """Bytes in, bytes out, no STOMP client: for frames stomp.py would never send."""

    def __init__(self, node: NodeProcess, transport: str) -> None:
        self.transport = transport
        if transport == "tcp":
            self.sock = socket.create_connection(("127.0.0.1", node.tcp_port), timeout=TIMEOUT)
        else:
            self.ws = websocket.create_connection(node.ws_url, subprotocols=["v12.stomp"], timeout=TIMEOUT)

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.transport == "tcp":
            self.sock.close()
        else:
            self.ws.close()

    def send(self, data: bytes) -> None:
        if self.transport == "tcp":
            self.sock.sendall(data)
        else:
            self.ws.send(data.decode("utf-8"))

    def read_until_closed(self, timeout: float = TIMEOUT) -> tuple[bytes, int | None]:
        """Everything the server sends until it closes, and the WebSocket close code (None on TCP)."""
        data = b""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if self.transport == "tcp":
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    return data, None
                if not chunk:
                    return data, None
                data += chunk
            else:
                self.ws.settimeout(remaining)
                try:
                    opcode, frame = self.ws.recv_data_frame(control_frame=True)
                except websocket.WebSocketTimeoutException:
                    continue
                except websocket.WebSocketConnectionClosedException:
                    return data, None
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None
                    return data, code
                if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    data += frame.data.encode() if isinstance(frame.data, str) else frame.data
        raise AssertionError(f"the server did not close within {timeout:g} s; received {data!r}")


def first_frame(data: bytes) -> Frame:
    """The first STOMP frame in ``data``, parsed by stomp.py's own parser."""
    end = data.find(b"\0")
    assert end >= 0, f"no complete frame in {data!r}"
    frame = parse_frame(data[:end])
    assert frame is not None, f"no frame in {data!r}"
    return frame


# ------------------------------------------------------------------------ tokens


def make_token(sub: str = "carol", *, secret: str = JWT_SECRET, expires_in: int | None = 300) -> str:
    claims: dict[str, Any] = {"sub": sub, "iat": int(time.time())}
    if expires_in is not None:
        claims["exp"] = int(time.time()) + expires_in
    return jwt.encode(claims, secret, algorithm="HS256")


# Logged-in users may send and subscribe anywhere (a production login denies by default).
ANY_DESTINATION = {"rules": [{"destination": "/**", "allow": "authenticated"}]}
JWT_CONFIG = {"auth": {"mode": "jwt", "jwt": {"secret": JWT_SECRET}}, "authorization": ANY_DESTINATION}
STATIC_CONFIG = {
    "auth": {"mode": "static", "users": {"alice": "secret", "bob": "hunter2"}},
    "authorization": ANY_DESTINATION,
}


def unacked_limit(n: int) -> dict[str, Any]:
    return {"stomp": {"max_unacked": n}}


# ========================================================================= tests
# ------------------------------------------------------------ connect, receipts


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connect_with_each_protocol_version(node, clients, transport, version) -> None:
    """Each of stomp.py's protocol classes gets its own version back and can publish and subscribe with it."""
    client = clients(node, transport, version=version, login="alice")
    connected = client.connected.headers
    assert connected["version"] == version
    assert connected["user-name"] == "alice"
    assert connected["server"].startswith("stompgate/")
    assert connected.get("session")

    # STOMP 1.0 makes the subscription id optional; the destination stands in for it.
    sub_id = None if version == "1.0" else "v"
    client.subscribe("/topic/versions", sub_id=sub_id)
    client.send("/topic/versions", f"hello {version}")
    message = client.next_message()
    assert message.body == f"hello {version}"
    assert message.headers["destination"] == "/topic/versions"
    assert message.headers["subscription"] == (sub_id or "/topic/versions")
    assert message.headers["message-id"]
    assert "ack" not in message.headers  # auto mode: nothing to acknowledge
    client.disconnect()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_receipts_for_subscribe_send_and_disconnect(node, clients, transport) -> None:
    """RECEIPTs answer SUBSCRIBE, SEND and DISCONNECT in order; a SEND's follows the delivery it caused."""
    client = clients(node, transport)
    client.conn.subscribe("/topic/receipts", id="r", receipt="sub-1")
    client.conn.send("/topic/receipts", "ping", receipt="send-1")
    client.rec.receipt("send-1")
    client.disconnect("disconnect-1")
    assert client.rec.log == [
        ("RECEIPT", "sub-1"),
        ("MESSAGE", "ping"),
        ("RECEIPT", "send-1"),
        ("RECEIPT", "disconnect-1"),
    ]
    assert not client.conn.is_connected()


# ------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("sender_transport", "bob_transports"),
    [("tcp", ("tcp", "tcp")), ("ws", ("ws", "ws")), ("tcp", ("ws", "ws")), ("ws", ("tcp", "ws"))],
    ids=["tcp", "ws", "tcp-sends-ws-receives", "ws-sends-mixed-receive"],
)
def test_user_destination_reaches_every_session_of_the_user(
    node, clients, sender_transport, bob_transports
) -> None:
    """SEND /user/bob/queue/x reaches each of bob's sessions on /user/queue/x, and nobody else's."""
    bobs = [clients(node, t, login="bob") for t in bob_transports]
    carol = clients(node, sender_transport, login="carol")
    alice = clients(node, sender_transport, login="alice")
    for client in (*bobs, carol, alice):
        client.subscribe("/user/queue/x", sub_id="inbox")

    alice.send("/user/bob/queue/x", "for bob", headers={"x-from": "alice"})
    for bob in bobs:
        message = bob.next_message()
        assert message.body == "for bob"
        assert message.headers["destination"] == "/user/queue/x"
        assert message.headers["subscription"] == "inbox"
        assert message.headers["x-from"] == "alice"

    # Fences: the first message carol and alice get must be the one addressed to them.
    alice.send("/user/carol/queue/x", "for carol")
    alice.send("/user/alice/queue/x", "for alice")
    assert carol.next_message().body == "for carol"
    assert alice.next_message().body == "for alice"


@pytest.mark.parametrize("publisher_transport", TRANSPORTS)
def test_topic_fan_out_reaches_every_subscriber(node, clients, publisher_transport) -> None:
    """A /topic message reaches every subscriber, on either transport, in publishing order."""
    subscribers = [clients(node, t, login=f"sub{i}") for i, t in enumerate(["tcp", "tcp", "ws", "ws"])]
    for i, sub in enumerate(subscribers):
        sub.subscribe("/topic/news", sub_id=f"news-{i}")
    publisher = clients(node, publisher_transport, login="publisher")
    for i in range(3):
        publisher.send("/topic/news", f"n{i}")
    for i, sub in enumerate(subscribers):
        messages = [sub.next_message() for _ in range(3)]
        assert [m.body for m in messages] == ["n0", "n1", "n2"], sub
        assert {m.headers["destination"] for m in messages} == {"/topic/news"}
        assert {m.headers["subscription"] for m in messages} == {f"news-{i}"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wildcard_subscriptions(node, clients, transport) -> None:
    """Spring's Ant-style patterns: ``*`` within a segment, ``**`` across segments and the root, ``?``."""
    patterns = {"star": "/topic/prices/*", "globstar": "/topic/prices/**", "qmark": "/topic/prices/?bm"}
    subscribers = {}
    for name, pattern in patterns.items():
        sub = clients(node, transport, login=name)
        sub.subscribe(pattern, sub_id=name)
        sub.subscribe("/topic/fence", sub_id="fence")
        subscribers[name] = sub

    publisher = clients(node, transport, login="publisher")
    for destination in ["/topic/prices/ibm", "/topic/prices/eu/sap", "/topic/prices", "/topic/other/ibm"]:
        publisher.send(destination, destination)
    publisher.send("/topic/fence", "fence")

    def seen(m: Frame) -> tuple[str, str, str]:
        return m.body, m.headers["destination"], m.headers["subscription"]

    received = {name: [seen(m) for m in sub.messages_until("fence")] for name, sub in subscribers.items()}
    assert received == {
        "star": [("/topic/prices/ibm", "/topic/prices/ibm", "star")],
        "globstar": [
            ("/topic/prices/ibm", "/topic/prices/ibm", "globstar"),
            ("/topic/prices/eu/sap", "/topic/prices/eu/sap", "globstar"),
            ("/topic/prices", "/topic/prices", "globstar"),
        ],
        "qmark": [("/topic/prices/ibm", "/topic/prices/ibm", "qmark")],
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unsubscribe_stops_only_that_subscription(node, clients, transport) -> None:
    """Two subscriptions to one destination get a copy each; after UNSUBSCRIBE of one, only the other does."""
    client = clients(node, transport)
    client.subscribe("/topic/a", sub_id="a")
    client.subscribe("/topic/a", sub_id="a-again")
    client.subscribe("/topic/b", sub_id="b")
    client.send("/topic/a", "a1")
    first = [client.next_message() for _ in range(2)]
    assert sorted((m.body, m.headers["subscription"]) for m in first) == [("a1", "a"), ("a1", "a-again")]

    client.unsubscribe("a")
    client.send("/topic/a", "a2")
    client.send("/topic/b", "fence")
    rest = client.messages_until("fence")
    assert [(m.body, m.headers["subscription"]) for m in rest] == [("a2", "a-again")]


CUSTOM_HEADERS = {
    "x-trace-id": "abc-123",
    "x-route": "eu:west:1",  # escaped as \c in 1.1/1.2, raw in 1.0
    "x-greeting": "héllo ☃",
    "content-type": "application/json",
}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_custom_headers_pass_through(node, clients, transport) -> None:
    """Application headers reach subscribers of every version intact; broker-owned ones are not forgeable."""
    receivers = {v: clients(node, transport, version=v, login=f"r{v}") for v in VERSIONS}
    for receiver in receivers.values():
        receiver.subscribe("/topic/headers", sub_id="h")
    sender = clients(node, transport, login="sender")
    forged = {"message-id": "forged", "subscription": "forged"}
    sender.send("/topic/headers", '{"ok": true}', headers={**CUSTOM_HEADERS, **forged})

    for version, receiver in receivers.items():
        message = receiver.next_message()
        assert message.body == '{"ok": true}'
        shown = {k: message.headers.get(k) for k in CUSTOM_HEADERS}
        assert shown == CUSTOM_HEADERS, f"STOMP {version} receiver"
        assert message.headers["subscription"] == "h"
        assert message.headers["message-id"] != "forged"
        assert "receipt" not in message.headers


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"zero\x00one\x00\x00two\x00", "text/plain"),
        (b"\x00" + bytes(range(256)) + b"\x00\xff\xfe\x00", "application/octet-stream"),
        (bytes(range(256)) * 1200, "application/octet-stream"),  # 300 KiB: many TCP reads, 64-bit WS length
    ],
    ids=["utf8-with-nul", "arbitrary-bytes", "large-binary"],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_body_with_nul_octets_is_byte_exact(node, clients, transport, body, content_type) -> None:
    """A body holding NUL octets (framed by content-length) arrives byte for byte; non-UTF-8 too."""
    binary = content_type == "application/octet-stream"  # stomp.py must send non-UTF-8 in binary WS frames
    receiver = clients(node, transport, login="rx", auto_decode=False)
    receiver.subscribe("/topic/bytes")
    sender = clients(node, transport, login="tx", auto_decode=False, binary=binary)
    sender.send("/topic/bytes", body, content_type=content_type)
    message = receiver.next_message()
    assert message.body == body
    assert message.headers["content-length"] == str(len(body))
    assert message.headers["content-type"] == content_type


# ---------------------------------------------------------------- ack modes


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_auto_ack_holds_nothing_for_acknowledgement(node_factory, clients, transport) -> None:
    """ack:auto -- no ack header, and any number of messages pass a tiny unacked limit without ACK."""
    node = node_factory(unacked_limit(1))
    client = clients(node, transport)
    client.subscribe("/queue/auto", ack="auto")
    for i in range(5):
        client.send("/queue/auto", f"m{i}")
    messages = [client.next_message() for _ in range(5)]
    assert [m.body for m in messages] == [f"m{i}" for i in range(5)]
    assert not any("ack" in m.headers for m in messages)
    assert not client.rec.errors and client.conn.is_connected()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_ack_is_cumulative(node_factory, clients, transport, version) -> None:
    """ack:client -- ACK of one message also acknowledges every earlier one of its subscription."""
    node = node_factory(unacked_limit(3))
    client = clients(node, transport, version=version)
    client.subscribe("/queue/work", sub_id="work", ack="client")
    for i in (1, 2, 3):
        client.send("/queue/work", f"m{i}")
    m1, m2, m3 = (client.next_message() for _ in range(3))
    for m in (m1, m2, m3):  # only 1.2 MESSAGE frames carry an ack header
        assert ("ack" in m.headers) == (version == "1.2"), m.headers

    client.ack(m2)  # settles m1 and m2; m3 stays pending
    client.send("/queue/work", "m4")
    client.send("/queue/work", "m5")  # would be a 4th unacknowledged message had m1 stayed pending
    assert client.bodies(2) == ["m4", "m5"]
    client.ack(m1)  # already covered by the cumulative ACK: harmless
    assert not client.rec.errors, client.rec.summary()

    # m3, m4, m5 are pending: one more delivery passes the limit, proving it is live.
    client.send("/queue/work", "m6", wait=False)
    assert "unacknowledged" in client.rec.error().headers["message"]
    client.rec.wait_disconnected()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_individual_ack_and_nack(node_factory, clients, transport, version) -> None:
    """ack:client-individual -- ACK and NACK settle exactly the message named, in the 1.2 and the 1.1 form."""
    node = node_factory(unacked_limit(2))
    client = clients(node, transport, version=version)
    client.subscribe("/queue/jobs", sub_id="jobs", ack="client-individual")
    client.send("/queue/jobs", "m1")
    client.send("/queue/jobs", "m2")
    m1, m2 = client.next_message(), client.next_message()
    for m in (m1, m2):
        assert m.headers["subscription"] == "jobs"
        assert ("ack" in m.headers) == (version == "1.2"), m.headers

    client.ack(m1, nack=True)  # NACK settles m1 alone: pending {m2}
    client.send("/queue/jobs", "m3")
    m3 = client.next_message()
    client.ack(m3)  # pending {m2}: an individual ACK does not cover the earlier m2
    client.send("/queue/jobs", "m4")
    assert client.next_message().body == "m4"
    assert not client.rec.errors, client.rec.summary()

    # m2 and m4 are pending, so one more delivery passes the limit of 2.
    client.send("/queue/jobs", "m5", wait=False)
    assert "unacknowledged" in client.rec.error().headers["message"]
    client.rec.wait_disconnected()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ack_of_unknown_message_is_an_error(node, clients, transport) -> None:
    """ACK naming a message the session never received is refused with an ERROR and a close."""
    client = clients(node, transport)
    client.subscribe("/queue/jobs", ack="client-individual")
    client.conn.ack("no-such-message")
    assert "unknown message" in client.rec.error().headers["message"]
    client.rec.wait_disconnected()


# ------------------------------------------------------------- transactions


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_transaction_commit_delivers_in_order(node, clients, transport) -> None:
    """Messages sent in a transaction are held until COMMIT, then delivered in sending order."""
    receiver = clients(node, transport, login="rx")
    receiver.subscribe("/queue/orders")
    sender = clients(node, transport, login="tx")
    tx = sender.begin()
    for i in range(3):
        sender.send("/queue/orders", f"tx-{i}", transaction=tx)
    sender.send("/queue/orders", "outside")  # no transaction: delivered at once
    assert receiver.next_message().body == "outside", "a message of the open transaction was delivered early"
    sender.commit(tx)
    assert receiver.bodies(3) == ["tx-0", "tx-1", "tx-2"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_transaction_abort_delivers_nothing(node, clients, transport) -> None:
    """ABORT drops the transaction's messages."""
    receiver = clients(node, transport, login="rx")
    receiver.subscribe("/queue/orders")
    sender = clients(node, transport, login="tx")
    tx = sender.begin()
    sender.send("/queue/orders", "doomed-1", transaction=tx)
    sender.send("/queue/orders", "doomed-2", transaction=tx)
    sender.abort(tx)
    sender.send("/queue/orders", "after")
    assert receiver.next_message().body == "after"


@pytest.mark.parametrize("outcome", ["commit", "abort", "still-open"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ack_in_transaction_takes_effect_at_commit(node_factory, clients, transport, outcome) -> None:
    """An ACK inside a transaction settles its message only at COMMIT: not while open, not after ABORT."""
    node = node_factory(unacked_limit(1))
    client = clients(node, transport)
    client.subscribe("/queue/txack", ack="client-individual")
    client.send("/queue/txack", "m1")
    m1 = client.next_message()
    tx = client.begin()
    client.ack(m1, transaction=tx)
    if outcome == "commit":
        client.commit(tx)
    elif outcome == "abort":
        client.abort(tx)

    client.send("/queue/txack", "m2", wait=False)
    if outcome == "commit":
        assert client.next_message().body == "m2"
        assert not client.rec.errors, client.rec.summary()
    else:  # m1 is still unacknowledged, so m2 passes the limit of 1
        assert "unacknowledged" in client.rec.error().headers["message"]
        client.rec.wait_disconnected()


# --------------------------------------------------------------- heart-beats

HEARTBEAT_500 = {"stomp": {"heartbeat": {"send_ms": 500, "receive_ms": 500}}}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_heartbeats_keep_an_idle_connection_alive(node_factory, clients, transport) -> None:
    """With 500 ms heart-beats both ways, an idle stomp.py connection stays up; the server's beats arrive."""
    node = node_factory(HEARTBEAT_500)
    client = clients(node, transport, heartbeats=(500, 500))
    assert client.connected.headers["heart-beat"] == "500,500"
    assert client.rec.stays_connected(3.0), f"dropped while idle: {client.rec.summary()}{client.node_log()}"
    assert client.rec.heartbeats >= 3, f"only {client.rec.heartbeats} heart-beats from the server in 3 s"
    client.assert_alive()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_silent_client_is_closed_by_heartbeat_check(node_factory, transport) -> None:
    """A client that promised 500 ms heart-beats and then sends nothing gets an ERROR and is closed."""
    node = node_factory(HEARTBEAT_500)
    with RawConnection(node, transport) as raw:
        raw.send(b"CONNECT\naccept-version:1.2\nhost:stompgate\nlogin:quiet\nheart-beat:500,0\n\n\x00")
        data, _ = raw.read_until_closed()
    connected = first_frame(data)
    assert connected.cmd == "CONNECTED"
    error = first_frame(data[data.index(b"\0") + 1 :].lstrip(b"\r\n"))
    assert error.cmd == "ERROR"
    assert "heart-beat" in error.headers["message"]


# --------------------------------------------------------------- auth


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_static_password_auth(node_factory, clients, transport) -> None:
    """Static users: the right password connects; a wrong one or an unknown user gets an ERROR and a close."""
    node = node_factory(STATIC_CONFIG)
    alice = clients(node, transport, login="alice", passcode="secret")
    assert alice.connected.headers["user-name"] == "alice"

    for login, passcode in [("alice", "wrong"), ("mallory", "secret"), ("bob", None)]:
        refused = clients(node, transport, login=login, passcode=passcode, wait=False)
        message = refused.rec.error().headers["message"]
        assert "authentication" in message, message
        refused.rec.wait_disconnected()
        assert refused.rec.connected_frame is None

    alice.assert_alive()


JWT_CARRIERS = [
    ("tcp", "passcode"),
    ("tcp", "authorization-header"),
    ("ws", "passcode"),
    ("ws", "authorization-header"),
    ("ws", "handshake-header"),
]


@pytest.mark.parametrize(("transport", "carrier"), JWT_CARRIERS, ids=[f"{t}-{c}" for t, c in JWT_CARRIERS])
def test_jwt_valid_token_connects_as_its_subject(node_factory, clients, transport, carrier) -> None:
    """A valid HS256 token (CONNECT passcode or Authorization, or WebSocket handshake) logs in as ``sub``."""
    node = node_factory(JWT_CONFIG)
    token = make_token("carol")
    kw: dict[str, Any] = {"login": None}
    if carrier == "passcode":
        kw["passcode"] = token
    elif carrier == "authorization-header":
        kw["connect_headers"] = {"Authorization": f"Bearer {token}"}
    else:
        kw["handshake_headers"] = {"Authorization": f"Bearer {token}"}
    client = clients(node, transport, **kw)
    assert client.connected.headers["user-name"] == "carol"
    # The session really is carol's: her user destination reaches it.
    client.subscribe("/user/queue/inbox")
    client.send("/user/carol/queue/inbox", "to myself")
    assert client.next_message().body == "to myself"


BAD_TOKENS = {
    "expired": (lambda: make_token(expires_in=-60), "token expired"),
    "wrong-signature": (lambda: make_token(secret="another-secret-just-as-long-0123456789"), "invalid token"),
    "no-exp": (lambda: make_token(expires_in=None), "invalid token"),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_jwt_bad_token_is_refused(node_factory, clients, transport, kind) -> None:
    """Expired, wrongly signed or exp-less tokens get an ERROR saying why, and the connection closes."""
    node = node_factory(JWT_CONFIG)
    make, expected = BAD_TOKENS[kind]
    client = clients(node, transport, login=None, passcode=make(), wait=False)
    message = client.rec.error().headers["message"]
    assert "authentication" in message and expected in message, message
    client.rec.wait_disconnected()
    assert client.rec.connected_frame is None


# ------------------------------------------------------------ malformed input


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_frame_gets_error_and_close(node, clients, transport) -> None:
    """Garbage on one connection ends that connection alone: ERROR, close, and other clients carry on."""
    bystander = clients(node, transport, login="bystander")
    with RawConnection(node, transport) as raw:
        raw.send(b"NOPE\n\n\x00")
        data, close_code = raw.read_until_closed()
    error = first_frame(data)
    assert error.cmd == "ERROR"
    assert "NOPE" in error.headers["message"]
    if transport == "ws":
        assert close_code == 1002  # protocol error
    bystander.assert_alive()


# ------------------------------------------------------------ authorization

AUTHORIZED_CONFIG = {
    "auth": {"mode": "static", "users": {"alice": "a", "bob": "b", "root": "r"}},
    "authorization": {
        "roles": {"admin": ["root"]},
        "rules": [
            {"destination": "/topic/admin/**", "roles": ["admin"]},
            {"subscribe": "/topic/**", "allow": "authenticated"},
            {"send": "/topic/chat", "allow": "authenticated"},
        ],
    },
}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_authorization_rules_and_the_sender_header(node_factory, clients, transport) -> None:
    """stomp.py sees what the rules allow go through with a sender it cannot forge,
    and an ERROR naming the frame for what they deny, then the close."""
    node = node_factory(AUTHORIZED_CONFIG)
    alice = clients(node, transport, login="alice", passcode="a")
    root = clients(node, transport, login="root", passcode="r")
    alice.subscribe("/topic/chat")
    root.subscribe("/topic/admin/news")

    bob = clients(node, transport, login="bob", passcode="b")
    bob.send("/topic/chat", "hello", headers={"sender": "root", "Server-Sent": "true"})
    message = alice.next_message()
    assert (message.body, message.headers["sender"]) == ("hello", "bob")
    assert "server-sent" not in {name.lower() for name in message.headers}

    bob.send("/topic/admin/news", "not for you", wait=False)
    assert bob.rec.error().headers["message"] == "access denied: SEND /topic/admin/news"
    bob.rec.wait_disconnected()

    sneaky = clients(node, transport, login="alice", passcode="a")
    sneaky.conn.subscribe("/topic/**", id="all")  # would take the admin topic too
    assert sneaky.rec.error().headers["message"] == "access denied: SUBSCRIBE /topic/**"
    sneaky.rec.wait_disconnected()

    root.send("/topic/admin/news", "fence")
    assert [m.body for m in root.messages_until("fence")] == []  # bob's message never arrived
    alice.send("/topic/chat", "still here")
    assert alice.next_message().body == "still here"  # the others' sessions go on


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_production_login_without_rules_denies(node_factory, clients, transport) -> None:
    node = node_factory({"auth": {"mode": "static", "users": {"alice": "a"}}})
    alice = clients(node, transport, login="alice", passcode="a")
    alice.conn.subscribe("/topic/x", id="1")
    assert alice.rec.error().headers["message"] == "access denied: SUBSCRIBE /topic/x"


def test_a_session_ends_with_its_token(node_factory, clients) -> None:
    node = node_factory(JWT_CONFIG)
    carol = clients(node, "ws", login=None, passcode=make_token("carol", expires_in=2))
    assert carol.rec.stays_connected(1.0)
    assert carol.rec.error(timeout=5).headers["message"] == "token expired"
    carol.rec.wait_disconnected()


def test_what_the_api_publishes_is_marked_server_sent(node, clients) -> None:
    alice = clients(node, "tcp")
    alice.subscribe("/topic/news")
    status, _ = api(node, "POST", "/api/publish", {"destination": "/topic/news", "payload": "backend"})
    assert status == 200
    message = alice.next_message()
    assert message.headers["server-sent"] == "true" and "sender" not in message.headers
    forged = {"destination": "/topic/news", "headers": {"Sender": "x"}}
    status, reply = api(node, "POST", "/api/publish", forged)
    assert status == 400 and "set by the broker" in reply["error"], reply


# --------------------------------------------------- application destinations

HANDLERS = Path(__file__).resolve().parent.parent / "app_handlers.py"

@pytest.fixture
def app_node(node_factory) -> NodeProcess:
    config = {"destinations": {"application_prefixes": ["/app"]}, "server": {"extensions": [str(HANDLERS)]}}
    return node_factory(config)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_message_mapping_replies_where_spring_would(app_node, clients, transport) -> None:
    """@MessageMapping with the default destination, @SendTo with a template variable,
    @SendToUser broadcast and not, and @SubscribeMapping, seen by stomp.py."""
    alice = clients(app_node, transport, login="alice")
    alice.subscribe("/topic/hello", sub_id="hello")
    alice.subscribe("/topic/rooms/lobby", sub_id="lobby")
    alice.subscribe("/user/queue/me", sub_id="me")
    other = clients(app_node, transport, login="alice")  # another session of alice
    other.subscribe("/user/queue/me", sub_id="me")

    alice.send("/app/hello", '{"name": "Ada"}', content_type="application/json")
    greeting = alice.next_message()
    assert greeting.headers["destination"] == "/topic/hello" and greeting.headers["server-sent"] == "true"
    assert json.loads(greeting.body) == {"content": "Hello, Ada!"}

    alice.send("/app/chat/lobby", "hi all")
    room = alice.next_message()
    assert room.headers["destination"] == "/topic/rooms/lobby"
    assert json.loads(room.body) == {"room": "lobby", "from": "alice", "text": "hi all"}

    alice.send("/app/whoami", "")  # broadcast=False: the sending session only
    alice.send("/app/all-sessions", "both")  # every session of the user
    assert [alice.next_message().body, alice.next_message().body] == ["alice", "both"]
    assert other.next_message().body == "both"  # the first other got: whoami's reply never came

    rid = "sub-rooms"
    alice.conn.subscribe("/app/rooms", id="rooms", receipt=rid)
    alice.rec.receipt(rid)
    reply = alice.next_message()
    assert reply.headers["subscription"] == "rooms" and json.loads(reply.body) == ["lobby", "games"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_handler_errors_reach_the_sender(app_node, clients, transport) -> None:
    """A MessagingError's text goes to the sender's /user/queue/errors, another
    exception a fixed text (its details stay in the log); errors="frame" and an
    unmapped destination are ERROR frames. Calls of one session keep their order."""
    alice = clients(app_node, transport, login="alice")
    alice.subscribe("/user/queue/errors", sub_id="errors")
    alice.subscribe("/topic/ordered", sub_id="ordered")
    alice.send("/app/fail", "")
    assert json.loads(alice.next_message().body) == {"error": "no such room", "destination": "/app/fail"}
    alice.send("/app/crash", "")
    crash = json.loads(alice.next_message().body)
    assert crash == {"error": "internal error in the handler", "destination": "/app/crash"}
    assert "internal detail" in app_node.log() and "internal detail" not in str(crash)

    alice.send("/app/ordered", "first", wait=False)
    alice.send("/app/ordered", "second")
    assert [alice.next_message().body, alice.next_message().body] == ["first", "second"]

    strict = clients(app_node, transport, login="bob")
    strict.send("/app/strict", "", wait=False)
    assert strict.rec.error().headers["message"] == "refused by the application"
    strict.rec.wait_disconnected()

    lost = clients(app_node, transport, login="carol")
    lost.send("/app/nowhere", "", wait=False)
    assert lost.rec.error().headers["message"] == "no handler for SEND /app/nowhere"
    alice.assert_alive()


POLICY = {
    "auth": {"mode": "static", "users": {"alice": "a", "bob": "b", "root": "r", "ops": "o"}},
    "authorization": {
        "roles": {"admin": ["root"], "support": ["ops"]},
        "rules": [
            {"destination": "/topic/admin/**", "roles": ["admin"]},
            {"subscribe": "/topic/support/**", "roles": ["admin", "support"]},
            {"send": "/topic/announcements", "users": ["root"]},
            {"subscribe": "/topic/room.{user}.*", "allow": "authenticated"},
            {"subscribe": "/topic/**", "allow": "authenticated"},
            {"send": "/topic/chat.*", "allow": "authenticated"},
            {"subscribe": "/user/queue/**", "allow": "authenticated"},
            {"send": "/user/{user}/**", "allow": "authenticated"},
            {"send": "/user/*/queue/support", "roles": ["support"]},
        ],
    },
}
POLICY_TABLE = [
    # user, frame, destination, allowed
    ("alice", "SUBSCRIBE", "/topic/chat.lobby", True),
    ("alice", "SUBSCRIBE", "/topic/admin/audit", False),
    ("root", "SUBSCRIBE", "/topic/admin/audit", True),
    ("alice", "SUBSCRIBE", "/topic/**", False),  # would take /topic/admin/... and /topic/support/...
    ("ops", "SUBSCRIBE", "/topic/**", False),  # support may not read /topic/admin/...
    ("root", "SUBSCRIBE", "/topic/**", True),  # admin may read everything under /topic
    ("ops", "SUBSCRIBE", "/topic/support/*", True),
    ("alice", "SUBSCRIBE", "/topic/support/tickets", False),
    ("alice", "SUBSCRIBE", "/topic/room.alice.*", True),
    ("alice", "SEND", "/topic/chat.lobby", True),
    ("alice", "SEND", "/topic/news", False),  # the default: deny
    ("alice", "SEND", "/topic/announcements", False),
    ("root", "SEND", "/topic/announcements", True),
    ("alice", "SEND", "/user/alice/queue/notes", True),
    ("alice", "SEND", "/user/bob/queue/notes", False),
    ("ops", "SEND", "/user/bob/queue/support", True),
    ("alice", "SUBSCRIBE", "/user/queue/inbox", True),
]


@pytest.mark.parametrize(("user", "frame", "destination", "allowed"), POLICY_TABLE)
def test_a_policy_table_on_a_real_node(node_factory, clients, user, frame, destination, allowed) -> None:
    """Each rule of a Spring-like policy, as stomp.py sees it: a RECEIPT, or an ERROR naming the frame."""
    node = node_factory(POLICY)
    client = clients(node, "tcp", login=user, passcode=POLICY["auth"]["users"][user])
    rid = "check"
    if frame == "SUBSCRIBE":
        client.conn.subscribe(destination, id="1", receipt=rid)
    else:
        client.conn.send(destination, "x", headers={"receipt": rid})
    if allowed:
        client.rec.receipt(rid)
        assert not client.rec.errors
    else:
        assert client.rec.error().headers["message"] == f"access denied: {frame} {destination}"
        client.rec.wait_disconnected()
