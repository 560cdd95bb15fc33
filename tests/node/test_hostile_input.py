"""Hostile input from users with a valid login (issue 11, item 9), against real nodes.

Hostile JSON and form bodies get a 4xx that says why, never a 500; user names
with control characters are refused at login in every mode; failed logins are
logged, rate-limited, with the remote address; user text cannot forge a log
line; JWT refusals do not echo PyJWT's texts; the chat example's
cookie-authenticated endpoints cannot be called by another site's form, and
its extension's source is not served.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets

from harness.nodes import API_KEY, ROOT, NodeProcess
from harness.stompclient import WsStomp
from stompgate.config import load_config
from stompgate.logs import RateLimitedLog
from stompgate.stomp import Frame

pytestmark = pytest.mark.usefixtures("close_ws_clients")

SECRET = "s" * 32


def call(
    node: NodeProcess,
    path: str,
    body: bytes,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, str, bytes]:
    """POST ``body`` as it is: (status, content type, response body)."""
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    req = urllib.request.Request(node.http_url + path, data=body, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


def api_error(node: NodeProcess, path: str, body: bytes, **kw: Any) -> tuple[int, str]:
    """A refused API call: its status and the ``error`` of its JSON body."""
    status, content_type, raw = call(node, path, body, headers={"Authorization": f"Bearer {API_KEY}"}, **kw)
    assert content_type == "application/json", (status, raw[:300])
    return status, json.loads(raw)["error"]


def assert_no_500(node: NodeProcess) -> None:
    log = node.log()
    assert "Error handling request" not in log and "Traceback" not in log, log[-3000:]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# ------------------------------------------------------------------ hostile JSON

SEND = b'{"user": "bob", "destination": "/queue/a", '

HOSTILE_BODIES = {
    # stdlib json: RecursionError, a 500 with a traceback
    "nested-body": (nested(100_000), "application/json", 400, "nested deeper than 1024 levels"),
    # parsed (under orjson's 1024 levels), but too deep to be written back as the message body
    "nested-payload": (
        SEND + b'"payload": ' + nested(1000) + b"}",
        "application/json",
        400,
        "nested too deeply",
    ),
    # UTF-8 cannot carry a lone surrogate: it would break Redis later
    "surrogate-value": (SEND + b'"payload": "a\\ud800b"}', "application/json", 400, "lone UTF-16 surrogate"),
    "surrogate-key": (
        SEND + b'"payload": "x", "headers": {"\\udc00": "v"}}',
        "application/json",
        400,
        "surrogate",
    ),
    "not-utf8": (SEND + b'"payload": "\xff"}', "application/json", 400, "not UTF-8"),
    "empty": (b"", "application/json", 400, "empty"),
    # what a cross-site form or a no-preflight fetch can send: not read at all
    "text-plain": (SEND + b'"payload": "x"}', "text/plain", 415, "application/json"),
    "form": (
        b"user=bob&destination=%2Fqueue%2Fa&payload=x",
        "application/x-www-form-urlencoded",
        415,
        "application/json",
    ),
    "no-type": (SEND + b'"payload": "x"}', None, 415, "application/json"),
}


@pytest.fixture(scope="module")
def api_node(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One node for the JSON cases (each case reads its log: a 500 anywhere fails them all)."""
    from harness.nodes import start_node

    node = start_node(tmp_path_factory.mktemp("api"), {"stomp": {"max_frame_size": 256 * 1024}})
    yield node
    assert node.stop() == 0


@pytest.mark.parametrize("path", ["/api/send-to-user", "/api/publish"])
@pytest.mark.parametrize("case", list(HOSTILE_BODIES))
def test_hostile_json_gets_a_4xx_that_says_why(api_node: NodeProcess, path: str, case: str) -> None:
    body, content_type, status, words = HOSTILE_BODIES[case]
    got, error = api_error(api_node, path, body, content_type=content_type)
    assert (got, words in error) == (status, True), error
    assert_no_500(api_node)


@pytest.mark.parametrize("case", ["nested-body", "surrogate-value", "text-plain", "no-type"])
def test_unread_refuses_hostile_json_too(api_node: NodeProcess, case: str) -> None:
    body, content_type, status, words = HOSTILE_BODIES[case]
    body = body.replace(b'"payload"', b'"destination2"')  # unread reads user and destination only
    got, error = api_error(api_node, "/api/unread", body, content_type=content_type)
    assert (got, words in error) == (status, True), error
    assert_no_500(api_node)


async def _raw_post(node: NodeProcess, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Write a request by hand and return the response head (the node may answer before the body ends)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)

    async def write() -> None:
        writer.write(head)
        for chunk in body_chunks:
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.ensure_future(write())
    try:
        response = await asyncio.wait_for(reader.read(64 * 1024), 10)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return response


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_limit_is_a_json_413(api_node: NodeProcess, framing: str) -> None:
    """Over client_max_size (max_frame_size + 64 KiB): 413 with a JSON error, announced or not."""
    size = 2 * 1024 * 1024
    common = (
        f"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
    )
    if framing == "content-length":
        # Announced: refused before a byte of the body is read (none is ever sent here).
        head, chunks = (common + f"Content-Length: {size}\r\n\r\n").encode(), []
    else:
        piece = b'"' + b"x" * 65536 + b'"'
        head = (common + "Transfer-Encoding: chunked\r\n\r\n").encode()
        chunks = [b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(size // len(piece))]
    response = await _raw_post(api_node, head, chunks)
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), response[:300]
    assert b"Content-Type: application/json" in rest and b"larger than" in rest, response[:500]
    assert_no_500(api_node)


# ------------------------------------------------------------ the chat example


def chat_overrides() -> dict[str, Any]:
    """The top-level config.yaml's chat example (static dir, extension, SockJS, cookie), on a test node."""
    config = load_config(ROOT / "config.yaml", env={})
    return {
        "server": {
            "websocket_paths": ["/ws"],
            "sockjs": [{"path": s.path} for s in config.server.sockjs],
            "static": [{"path": s.path, "dir": s.dir} for s in config.server.static],
            "extensions": list(config.server.extensions),
        },
        "auth": {"mode": "dev", "cookie": config.auth.cookie},
        "destinations": {"application_prefixes": list(config.destinations.application_prefixes)},
    }


def test_the_chat_example_serves_its_page_but_not_its_extension_source(node_factory) -> None:
    node = node_factory(chat_overrides())
    with urllib.request.urlopen(node.http_url + "/chat/index.html", timeout=5) as resp:
        assert b"Chat With STOMP Message" in resp.read()
    for path in ("/chat/backend.py", "/chat/README.md"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(node.http_url + path, timeout=5)
        assert info.value.code == 404, path


async def test_cookie_endpoints_cannot_be_called_by_a_cross_site_form(node_factory) -> None:
    """A form on another site posts with the victim's cookie; only JSON (preflighted cross-site) is read."""
    node = node_factory(chat_overrides())
    bob = await WsStomp.connect(node.ws_url, "bob")
    await bob.subscribe("/user/topic/reply")
    alice = {"Cookie": "chat_user=alice", "Origin": "http://evil.example"}
    send = "/wsTemplate/sendToUser"
    form = urllib.parse.urlencode({"receiver": "bob", "msg": "forged"}).encode()
    for body, content_type in [
        (form, "application/x-www-form-urlencoded"),
        (
            b"--b\r\nContent-Disposition: form-data; name=receiver\r\n\r\nbob\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
        (b'{"receiver": "bob", "msg": "forged"}', "text/plain"),  # a form with enctype text/plain
    ]:
        status, _, raw = call(node, send, body, content_type, alice)
        assert (status, json.loads(raw)["code"]) == (415, "415"), raw
    with pytest.raises(TimeoutError):
        await bob.recv(0.3)  # nothing was sent in alice's name
    # The node grants no CORS preflight, so a cross-site page cannot send the JSON either.
    preflight = urllib.request.Request(
        node.http_url + send,
        method="OPTIONS",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
    )
    try:
        # A blocking call on purpose, like call() above: the node runs in its own process.
        with urllib.request.urlopen(preflight, timeout=5) as resp:  # noqa: ASYNC210 - see above
            granted = resp.headers.get("Access-Control-Allow-Origin")
    except urllib.error.HTTPError as exc:
        granted = exc.headers.get("Access-Control-Allow-Origin")
    assert granted is None
    # The page's own calls (JSON) work.
    status, _, raw = call(node, send, b'{"receiver": "bob", "msg": "hi"}', headers=alice)
    assert (status, json.loads(raw)) == (200, {"code": "200"})
    assert json.loads((await bob.recv()).body) == {"content": "alice say: hi"}

    # The API's unread (which also takes a cookie login) deletes nothing for a form.
    await bob.close()
    await asyncio.sleep(0.2)
    await (await WsStomp.connect(node.ws_url, "carol")).publish("/user/bob/queue/box", "kept")
    bob_cookie = {"Cookie": "chat_user=bob"}
    status, _, _ = call(node, "/api/unread", b'{"destination": "/queue/box"}', "text/plain", bob_cookie)
    assert status == 415
    status, _, raw = call(node, "/api/unread", b'{"destination": "/queue/box"}', headers=bob_cookie)
    assert status == 200 and [m["payload"] for m in json.loads(raw)["messages"]] == ["kept"]
    assert_no_500(node)


@pytest.mark.parametrize(
    "body, status, words",
    [
        (nested(5000), 400, "nested"),
        (b'{"receiver": "bob", "msg": "\\ud800"}', 400, "surrogate"),
        (b'{"receiver": ["bob"], "msg": "x"}', 400, "receiver must be a string"),
        (b'{"receiver": "bob\\nINFO forged", "msg": "x"}', 400, "control character"),
        (b'{"receiver": "bob", "msg": 5}', 400, "msg must be a string"),
    ],
    ids=["nested", "surrogate", "receiver-list", "receiver-newline", "msg-number"],
)
def test_the_chat_backend_refuses_hostile_json_with_a_4xx(
    node_factory, body: bytes, status: int, words: str
) -> None:
    node = node_factory(chat_overrides())
    got, _, raw = call(node, "/wsTemplate/sendToUser", body, headers={"Cookie": "chat_user=alice"})
    reply = json.loads(raw)
    assert (got, reply["code"]) == (status, str(status)) and words in reply["msg"], reply
    assert_no_500(node)


# ----------------------------------------------------------------- logins


async def refused(url: str, headers: dict[str, str], **kw: Any) -> str:
    """CONNECT and expect an ERROR; its message."""
    client = await WsStomp.open(url, **kw)
    await client.send(Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0", **headers}))
    frame = await client.recv()
    assert frame.command == "ERROR", frame
    assert (await client.expect_closed()).code == 1008
    return frame.headers["message"]


def hs256(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, key, algorithm="HS256")


async def test_dev_login_with_control_characters_is_refused(node_factory) -> None:
    """CONNECT headers are not escaped, so no newline there; ESC, DEL and C1 controls are refused."""
    node = node_factory({"auth": {"mode": "dev", "cookie": "chat_user"}})
    for name in ["eve\x1b[2J", "eve\x7f", "eve\x85forged", "eve\tx"]:
        message = await refused(node.ws_url, {"login": name})
        assert message.startswith("authentication failed: the user name") and "control character" in message
    # the login cookie carries percent-escapes: a newline fits there
    cookie = {"Cookie": "chat_user=eve%0A2026-01-01%20INFO%20forged"}
    message = await refused(node.ws_url, {}, additional_headers=cookie)
    assert "control character (U+000A)" in message
    assert node.health()["sessions"] == 0


async def test_a_jwt_claim_with_a_newline_is_refused(node_factory) -> None:
    node = node_factory({"auth": {"mode": "jwt", "jwt": {"secret": SECRET}}})
    message = await refused(node.ws_url, {"passcode": hs256({"sub": "eve\nINFO forged"})})
    assert message == "authentication failed: the user name contains a control character (U+000A)"
    message = await refused(node.ws_url, {"passcode": hs256({"sub": "x" * 300})})
    assert "longer than 256 characters" in message


def test_http_logins_check_the_name_too(node_factory) -> None:
    """HTTP Basic and the login cookie on /api/unread and on the extension's endpoints."""
    node = node_factory(chat_overrides())
    basic = "Basic " + base64.b64encode(b"eve\nforged:").decode()
    for path in ("/api/unread", "/wsTemplate/pullUnreadMessage"):
        for headers in ({"Authorization": basic}, {"Cookie": "chat_user=eve%0Dforged"}):
            status, _, raw = call(node, path, b'{"destination": "/topic/reply"}', headers=headers)
            assert status == 401 and b"control character" in raw, (path, headers, raw)
    assert_no_500(node)


BAD_TOKENS = {
    "garbage": (lambda: "not.a.jwt", "invalid token: malformed"),
    # PyJWT says "Invalid header string: 'utf-8' codec can't decode byte 0xff..."
    "header-not-utf8": (lambda: base64.urlsafe_b64encode(b"\xff\xfe{").decode().rstrip("=") + ".e30.c2ln",
                        "invalid token: malformed"),
    "signature": (lambda: hs256({"sub": "eve"}, key="o" * 32), "invalid token: bad signature"),
    "no-exp": (
        lambda: jwt.encode({"sub": "eve"}, SECRET, algorithm="HS256"),
        "invalid token: missing 'exp' claim",
    ),
    "expired": (lambda: hs256({"sub": "eve", "exp": int(time.time()) - 60}), "token expired"),
    "not-yet": (lambda: hs256({"sub": "eve", "nbf": int(time.time()) + 600}), "invalid token: not yet valid"),
    "audience": (
        lambda: hs256({"sub": "eve", "aud": "elsewhere", "iss": "idp"}),
        "invalid token: wrong audience",
    ),
    "issuer": (
        lambda: hs256({"sub": "eve", "aud": "gw", "iss": "evil\nINFO forged"}),
        "invalid token: wrong issuer",
    ),
    "alg-none": (lambda: jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, None, algorithm="none"),
                 "invalid token: algorithm not allowed"),
}


async def test_jwt_refusals_are_fixed_short_messages(node_factory) -> None:
    """Nothing of PyJWT's own texts (nor of the token) reaches the client."""
    node = node_factory(
        {"auth": {"mode": "jwt", "jwt": {"secret": SECRET, "audience": "gw", "issuer": "idp"}}}
    )
    for kind, (make, expected) in BAD_TOKENS.items():
        token = make()
        message = await refused(node.ws_url, {"passcode": token})
        assert message == f"authentication failed: {expected}", kind
    assert "codec" not in node.log() and "Signature verification" not in node.log()


async def test_failed_logins_are_logged_with_the_address_at_most_20_a_minute(node_factory) -> None:
    node = node_factory({"auth": {"mode": "static", "users": {"alice": "right"}}})
    for i in range(30):
        await refused(node.ws_url, {"login": "alice" if i % 2 else "mallory\x1b[1A", "passcode": "wrong"})
    await asyncio.sleep(0.2)
    lines = node.log().splitlines()
    failed = [line for line in lines if "login failed from 127.0.0.1" in line]
    assert len(failed) == 20, failed
    assert "WARNING" in failed[0] and "as 'alice': invalid login or passcode" in failed[1]
    assert "as 'mallory\\x1b[1A'" in failed[0]  # the tried login, escaped, never the passcode
    assert "wrong" not in "\n".join(failed)
    held = [line for line in lines if "more than 20 failed logins in 60 s" in line]
    assert len(held) == 1, lines[-5:]


def test_the_rate_limited_log_sums_up_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(
        logging.getLogger("test.limited"), "failed logins", burst=2, interval_s=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        for i in range(7):
            limited.log("failure %d", i, key=f"10.0.0.{i % 3}")
        now[0] = 12.0
        limited.log("failure late", key="10.0.0.9")
    assert [r.getMessage() for r in caplog.records] == [
        "failure 0",
        "failure 1",
        "more than 2 failed logins in 10 s: the next ones are counted, and summed up later",
        "and 5 more failed logins not logged in the last 12 s (from 3 distinct sources)",
        "failure late",
    ]


# ----------------------------------------------------------------- log lines

FORGED = "2026-01-01 00:00:00,000 WARNING stompgate: FORGED"


async def test_user_text_cannot_forge_a_log_line(node_factory) -> None:
    """A SockJS session id is a URL segment: a %0D in it reached a log line as a carriage return."""
    node = node_factory({"server": {"sockjs": [{"path": "/sj"}]}, "logging": {"level": "info"}})
    session = "s%0D" + urllib.parse.quote(FORGED) + "%1B%5B2J%E2%80%A8"
    async with websockets.connect(f"ws://127.0.0.1:{node.port}/sj/000/{session}/websocket") as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "o"
        await ws.send("[broken")  # logged with the session id, then closed
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    # a failed login with a forged name is logged escaped as well
    await refused(node.ws_url, {"login": "eve\x1b]0;owned\x07"})
    deadline = time.monotonic() + 5
    while "broken JSON" not in node.log() or "login failed" not in node.log():
        assert time.monotonic() < deadline, node.log()
        await asyncio.sleep(0.05)
    log = node.log()
    assert not any(line.startswith(FORGED) for line in log.splitlines()), log
    assert "\x1b" not in log and "\u2028" not in log and "\r" not in log
    assert "sockjs session s\\r" + FORGED + "\\x1b[2J\\u2028: broken JSON" in log
    assert "as 'eve\\x1b]0;owned\\x07'" in log


def test_log_lines_stay_one_line_through_an_extension(node_factory, tmp_path: Path) -> None:
    """An application's extension logs what a request carried: the node's formatter keeps it one line."""
    ext = tmp_path / "echo_ext.py"
    ext.write_text(
        "import logging\n"
        "from aiohttp import web\n"
        "log = logging.getLogger('echo')\n"
        "def setup(node):\n"
        "    async def echo(request):\n"
        "        log.warning('asked for %s', request.query['q'])\n"
        "        raise ValueError('bad q: ' + request.query['q'])\n"
        "    node.app.router.add_get('/echo', echo)\n"
    )
    node = node_factory({"server": {"extensions": [str(ext)]}})
    query = urllib.parse.quote("x\n" + FORGED + "\r\x00\ud800", errors="surrogatepass")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{node.http_url}/echo?q={query}", timeout=5)
    time.sleep(0.2)
    log = node.log()
    assert "asked for x\\n" + FORGED + "\\r\\x00" in log, log
    assert "bad q: x\\n" + FORGED in log  # the exception's message in the traceback, too
    assert not any(line.startswith(FORGED) for line in log.splitlines()), log
    assert "Logging error" not in log  # a lone surrogate no longer breaks the handler
