"""SockJS as today's servers speak it, at a live stompgate node, over raw HTTP (aiohttp).

The points where the sockjs-protocol repository's current suite (sockjs-protocol.py)
and sockjs-node 0.3.24 differ from the protocol as it was in 2012 (0.3.3):

1. ``Cache-Control: no-store, no-cache, no-transform, must-revalidate, max-age=0``;
2. JSONP answers start with ``/**/`` (the Rosetta Flash defence);
3. ``Origin: null`` is echoed with credentials, where the origin policy lets it in
   (it must be allowed explicitly, as in Spring, when the node checks origins);
4. the iframe page loads sockjs-client first, then calls ``SockJS.bootstrap_iframe()``;
5. ``Content-Type: text/event-stream`` without a charset;
6. on the streaming transports the open frame travels in an HTTP chunk of its own.

Each test names the test of the suite it mirrors. The node runs STOMP, so what
follows the open frame is a CONNECTED frame; the echo server's ``/close`` service
(tests/sockjs_echo_server.py) shows a close frame sent in the same loop turn as the
open frame, which is where a server that batches frames would glue the two.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from harness.nodes import NodeProcess, start_node

from ..sockjsecho import EchoServer
from .test_sockjs_protocol import IFRAME_PAGE

NOT_CACHED = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
PRELUDE = b"h" * 2048 + b"\n"
CLIENT_URL = "/static/sockjs.min.js"
APP = "http://app.example"
Http = aiohttp.ClientSession


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node, four SockJS endpoints that differ only in which page origins they take."""
    endpoint = {"client_url": CLIENT_URL, "heartbeat_s": 25, "disconnect_delay_s": 2}
    proc = start_node(
        tmp_path_factory.mktemp("sockjs-today"),
        {
            "server": {
                "websocket_paths": ["/ws"],
                "sockjs": [
                    {"path": "/sj", **endpoint},  # server.allowed_origins: the same origin only
                    {"path": "/sjany", "allowed_origins": ["*"], **endpoint},
                    {"path": "/sjnull", "allowed_origins": ["null"], **endpoint},
                    {"path": "/sjapp", "allowed_origins": [APP], **endpoint},
                ],
            }
        },
    )
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def session_url(node: NodeProcess, endpoint: str = "/sjany") -> str:
    return f"{node.http_url}{endpoint}/000/{uuid.uuid4().hex}"


def connect_payload(login: str = "ada") -> str:
    """One SockJS payload (a JSON array of strings) carrying a STOMP CONNECT."""
    return json.dumps([f"CONNECT\naccept-version:1.2\nlogin:{login}\n\n\0"])


async def next_chunk(resp: aiohttp.ClientResponse, timeout: float = 5) -> bytes:
    """The next HTTP chunk of a chunked response, whole (b"" once the body has ended)."""
    data = b""
    while True:
        part, end_of_chunk = await asyncio.wait_for(resp.content.readchunk(), timeout)
        data += part
        if end_of_chunk or not part:
            return data


def assert_not_cached(resp: aiohttp.ClientResponse) -> None:
    """The suite's Test.verify_not_cached."""
    assert resp.headers.get("Cache-Control") == NOT_CACHED, (resp.url, dict(resp.headers))
    assert "Expires" not in resp.headers, dict(resp.headers)
    assert "Last-Modified" not in resp.headers, dict(resp.headers)


# -- 1. no-transform -----------------------------------------------------------


async def test_every_uncacheable_answer_says_no_transform(node: NodeProcess, http: Http) -> None:
    """Mirrors verify_not_cached as InfoTest.test_basic, XhrPolling.test_transport,
    XhrStreaming.test_transport, EventSource.test_transport, HtmlFile.test_transport and
    JsonPolling.test_transport call it; the iframe page (IframePage.verify) stays cacheable."""
    async with http.get(node.http_url + "/sjany/info") as resp:
        assert resp.status == 200
        assert_not_cached(resp)

    url = session_url(node)
    async with http.post(url + "/xhr") as resp:
        assert (resp.status, await resp.text()) == (200, "o\n")
        assert_not_cached(resp)
    async with http.post(url + "/xhr_send", data=connect_payload()) as resp:
        assert resp.status == 204
        assert_not_cached(resp)
    async with http.post(url + "/xhr") as resp:
        assert (await resp.text()).startswith('a["CONNECTED')

    for method, transport in [("POST", "xhr_streaming"), ("GET", "eventsource"), ("GET", "htmlfile?c=cb")]:
        async with http.request(method, f"{session_url(node)}/{transport}") as resp:
            assert resp.status == 200, transport
            assert_not_cached(resp)

    url = session_url(node)
    async with http.get(url + "/jsonp?c=cb") as resp:
        assert resp.status == 200
        assert_not_cached(resp)
    async with http.post(url + "/jsonp_send", data={"d": connect_payload()}) as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
        assert_not_cached(resp)

    async with http.get(node.http_url + "/sjany/iframe.html") as resp:
        assert resp.status == 200
        cache_control = resp.headers.get("Cache-Control", "")
        assert "public" in cache_control and re.search(r"max-age=[1-9][0-9]{6}", cache_control)


# -- 2. JSONP behind a comment -------------------------------------------------


def jsonp_frame(body: str, callback: str) -> str:
    """The SockJS frame inside ``/**/callback("frame");\\r\\n``."""
    prefix, suffix = f"/**/{callback}(", ");\r\n"
    assert body.startswith(prefix) and body.endswith(suffix), body
    frame: str = json.loads(body[len(prefix) : -len(suffix)])
    return frame


async def test_jsonp_answers_start_with_a_comment(node: NodeProcess, http: Http) -> None:
    """Mirrors JsonPolling.test_transport and JsonPolling.test_close: every JSONP body is
    ``/**/`` then the callback, so that no body starts with bytes a page chose (Rosetta
    Flash); sockjs-node also sends X-Content-Type-Options: nosniff."""
    url = session_url(node)
    async with http.get(url + "/jsonp?c=%63allback") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].replace(" ", "") == "application/javascript;charset=UTF-8"
        assert resp.headers.get("X-Content-Type-Options") == "nosniff"
        assert await resp.text() == '/**/callback("o");\r\n'
    async with http.post(url + "/jsonp_send", data={"d": connect_payload()}) as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
    async with http.get(url + "/jsonp?c=callback") as resp:
        frame = jsonp_frame(await resp.text(), "callback")
    (connected,) = json.loads(frame[1:])
    assert connected.startswith("CONNECTED\nversion:1.2\n"), connected
    # DISCONNECT ends the STOMP session; the close frame is served behind the comment too.
    async with http.post(url + "/jsonp_send", data={"d": json.dumps(["DISCONNECT\n\n\0"])}) as resp:
        assert resp.status == 200
    for _ in range(2):
        async with http.get(url + "/jsonp?c=x") as resp:
            frame = jsonp_frame(await resp.text(), "x")
            if frame.startswith("c["):
                break
    assert frame.startswith("c["), frame


# -- 3. Origin: null -----------------------------------------------------------


async def test_null_origin_is_echoed_where_it_is_allowed(node: NodeProcess, http: Http) -> None:
    """Mirrors InfoTest.test_options_null_origin and verify_options/verify_cors with the
    origin 'null' (a file: page, a sandboxed frame): echoed with credentials, since a
    browser reads ``*`` with credentials as a refusal."""
    null = {"Origin": "null"}
    for endpoint in ("/sjnull", "/sjany"):
        preflight = {**null, "Access-Control-Request-Method": "POST"}
        async with http.options(f"{node.http_url}{endpoint}/info", headers=preflight) as resp:
            assert resp.status == 204
            assert await resp.read() == b""
            assert resp.headers.get("Access-Control-Allow-Origin") == "null"
            assert resp.headers.get("Access-Control-Allow-Credentials") == "true"
        async with http.get(f"{node.http_url}{endpoint}/info", headers=null) as resp:
            assert resp.status == 200
            assert resp.headers.get("Access-Control-Allow-Origin") == "null"
            assert resp.headers.get("Access-Control-Allow-Credentials") == "true"
        url = session_url(node, endpoint)
        async with http.post(url + "/xhr", headers=null) as resp:
            assert (resp.status, await resp.text()) == (200, "o\n")
            assert resp.headers.get("Access-Control-Allow-Origin") == "null"
    # Without an Origin: `*` and no credentials (verify_cors without an origin).
    async with http.get(node.http_url + "/sjany/info") as resp:
        assert resp.headers.get("Access-Control-Allow-Origin") == "*"
        assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_null_origin_is_refused_unless_listed(node: NodeProcess, http: Http) -> None:
    """As Spring's checkOrigin: where origins are checked (the node's default, the same
    origin only, or an allow-list), ``null`` is one more origin not on the list: 403 on
    every SockJS request and on the WebSocket handshake. Only ``null`` or ``*`` lets it in."""
    null = {"Origin": "null"}
    for endpoint in ("/sj", "/sjapp"):
        async with http.get(f"{node.http_url}{endpoint}/info", headers=null) as resp:
            assert resp.status == 403, endpoint
        preflight = {**null, "Access-Control-Request-Method": "POST"}
        async with http.options(f"{node.http_url}{endpoint}/info", headers=preflight) as resp:
            assert resp.status == 403, endpoint
            assert "Access-Control-Allow-Origin" not in resp.headers
        url = session_url(node, endpoint)
        async with http.post(url + "/xhr", headers=null) as resp:
            assert resp.status == 403, endpoint
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url.replace("http:", "ws:") + "/websocket", headers=null)
        assert refused.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(node.ws_url, headers=null, protocols=["v12.stomp"])
    assert refused.value.status == 403
    # The listed origin and the node's own pages still pass.
    async with http.get(node.http_url + "/sjapp/info", headers={"Origin": APP}) as resp:
        assert resp.status == 200
        assert resp.headers.get("Access-Control-Allow-Origin") == APP
    async with http.get(node.http_url + "/sj/info", headers={"Origin": node.http_url}) as resp:
        assert resp.status == 200


# -- 4. the iframe page --------------------------------------------------------


async def test_iframe_page_loads_the_client_then_bootstraps(node: NodeProcess, http: Http) -> None:
    """Mirrors IframePage.verify (its iframe_body pattern): the client's script first, then
    an inline script that calls SockJS.bootstrap_iframe() (no ``_sockjs_onload`` hook)."""
    expected = IFRAME_PAGE.replace("@SOCKJS_URL@", CLIENT_URL)  # the page as the suite writes it
    for suffix in ("/iframe.html", "/iframe-1.6.1.html?t=123"):
        async with http.get(node.http_url + "/sj" + suffix) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].replace(" ", "") == "text/html;charset=UTF-8"
            assert resp.headers.get("ETag")
            assert (await resp.text()).strip() == expected


# -- 5. text/event-stream ------------------------------------------------------


async def test_eventsource_content_type_has_no_charset(node: NodeProcess, http: Http) -> None:
    """Mirrors EventSource.test_transport: verify_content_type(r, 'text/event-stream')."""
    async with http.get(session_url(node) + "/eventsource") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"


# -- 6. the open frame in a chunk of its own -----------------------------------

STREAMING = [
    # (method, transport, prelude check, the open frame as the transport writes it)
    ("POST", "xhr_streaming", lambda chunk: chunk == PRELUDE, b"o\n"),
    ("GET", "eventsource", lambda chunk: chunk == b"\r\n", b"data: o\r\n\r\n"),
    (
        "GET",
        "htmlfile?c=cb",
        lambda chunk: chunk.startswith(b"<!doctype html>") and len(chunk) > 1024,
        b'<script>\np("o");\n</script>\r\n',
    ),
]
STREAMING_IDS = ["xhr_streaming", "eventsource", "htmlfile"]


def frame_of(transport: str, chunk: bytes) -> str:
    """The SockJS frame a streaming transport's chunk carries."""
    text = chunk.decode()
    if transport == "xhr_streaming":
        return text.removesuffix("\n")
    if transport == "eventsource":
        return text.removeprefix("data: ").removesuffix("\r\n\r\n")
    found = re.fullmatch(r'<script>\np\((".*")\);\n</script>\r\n', text, re.S)
    assert found, text
    frame: str = json.loads(found.group(1))
    return frame


@pytest.mark.parametrize(("method", "transport", "is_prelude", "open_frame"), STREAMING, ids=STREAMING_IDS)
async def test_open_frame_in_a_chunk_of_its_own_at_the_node(
    node: NodeProcess, http: Http, method: str, transport: str, is_prelude: Any, open_frame: bytes
) -> None:
    """Mirrors XhrStreaming.test_transport, EventSource.test_transport and
    HtmlFile.test_transport, which read the prelude, then the open frame, then each
    message frame as one read each: here, one HTTP chunk each."""
    url = session_url(node)
    async with http.request(method, f"{url}/{transport}") as resp:
        assert resp.status == 200
        assert resp.headers.get("Transfer-Encoding", "").lower() == "chunked"
        assert is_prelude(await next_chunk(resp))
        assert await next_chunk(resp) == open_frame
        async with http.post(url + "/xhr_send", data=connect_payload()) as sent:
            assert sent.status == 204
        frame = frame_of(transport, await next_chunk(resp))
        (connected,) = json.loads(frame[1:])
        assert connected.startswith("CONNECTED\nversion:1.2\n"), connected


@pytest.mark.parametrize(("method", "transport", "is_prelude", "open_frame"), STREAMING, ids=STREAMING_IDS)
async def test_open_frame_not_glued_to_a_frame_sent_at_once(
    sockjs_echo: EchoServer, http: Http, method: str, transport: str, is_prelude: Any, open_frame: bytes
) -> None:
    """Mirrors HandlingClose.test_close_frame and Http11.test_streaming: the /close service
    closes every session as it opens, in the same loop turn; the open frame is still a
    chunk of its own, the close frame the next one, then the body ends."""
    url = sockjs_echo.http(f"/close/000/{uuid.uuid4().hex}")
    async with http.request(method, f"{url}/{transport}") as resp:
        assert resp.status == 200
        assert is_prelude(await next_chunk(resp))
        assert await next_chunk(resp) == open_frame
        assert frame_of(transport, await next_chunk(resp)) == 'c[3000,"Go away!"]'
        assert await next_chunk(resp) == b""
