"""The SockJS layer against SockJS protocol 0.3.3, as the sockjs-protocol repository's
current suite (sockjs-protocol.py) checks it and sockjs-client 1.x speaks it.

The server under test is `tests/sockjs_echo_server.py`, run as a subprocess. It
mounts the four services the protocol's reference test suite expects:

* /echo                     echoes every message; streaming responses end after 4096 bytes
* /disabled_websocket_echo  the same, without the websocket transport
* /cookie_needed_echo       the same, with the JSESSIONID cookie
* /close                    closes every session right after opening it (3000 "Go away!")

HTTP traffic goes through the raw client in `tests/sockjsclient.py` so that status
lines, headers and streaming bodies can be checked byte for byte; websockets go
through the `websockets` library. Each test uses fresh session ids, so the tests
are independent of each other and of their order.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..sockjsclient import Connection, Head, Response, fetch
from ..sockjsecho import EchoServer

HOST = "127.0.0.1"

PRELUDE = b"h" * 2048 + b"\n"
ANOTHER_CONNECTION = 'c[2010,"Another connection still open"]\n'
GO_AWAY = 'c[3000,"Go away!"]\n'
INTERRUPTED = 'c[1002,"Connection interrupted"]\n'
NOT_CACHED = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# -- the server under test -----------------------------------------------------


@pytest.fixture
def server(sockjs_echo: EchoServer) -> EchoServer:
    return sockjs_echo


# -- helpers -------------------------------------------------------------------


def session_path(service: str = "echo", server_id: str = "000") -> str:
    return f"/{service}/{server_id}/{uuid.uuid4()}"


async def get(server: EchoServer, path: str, headers=None, timeout: float = 5) -> Response:
    return await fetch(HOST, server.port, "GET", path, headers, None, timeout=timeout)


async def post(
    server: EchoServer, path: str, body: str | bytes = b"", headers=None, timeout: float = 5
) -> Response:
    return await fetch(HOST, server.port, "POST", path, headers, body, timeout=timeout)


async def options(server: EchoServer, path: str, headers=None) -> Response:
    return await fetch(HOST, server.port, "OPTIONS", path, headers, None)


async def open_stream(server: EchoServer, method: str, path: str, headers=None) -> tuple[Connection, Head]:
    conn = await Connection.open(HOST, server.port)
    head = await conn.request(method, path, headers, b"" if method == "POST" else None)
    return conn, head


async def send_only(server: EchoServer, method: str, path: str) -> Connection:
    """A request whose response we don't wait for (a pending poll)."""
    conn = await Connection.open(HOST, server.port)
    await conn.send(method, path, None, b"" if method == "POST" else None)
    return conn


def content_type(r: Head) -> str | None:
    value = r.get("content-type")
    return None if value is None else value.replace(" ", "")


def assert_cors(r: Head, origin: str | None = None) -> None:
    """The suite's verify_cors: an Origin (``null`` too) is echoed with credentials;
    without one, ``*`` and no credentials."""
    if origin:
        assert r.get("access-control-allow-origin") == origin, r.headers
        assert r.get("access-control-allow-credentials") == "true", r.headers
    else:
        assert r.get("access-control-allow-origin") == "*", r.headers
        assert not r.has("access-control-allow-credentials"), r.headers


def assert_not_cached(r: Head) -> None:
    assert r.get("cache-control") == NOT_CACHED, r.headers
    assert not r.has("expires"), r.headers
    assert not r.has("last-modified"), r.headers


def assert_long_cacheable(r: Head) -> None:
    cache_control = r.get("cache-control") or ""
    assert "public" in cache_control, r.headers
    assert re.search(r"max-age=[1-9][0-9]{6}", cache_control), f"max-age too small: {cache_control!r}"
    assert r.get("expires"), r.headers


def assert_no_cookie(r: Head) -> None:
    assert not r.has("set-cookie"), r.headers


async def assert_options(server: EchoServer, path: str, allowed: str) -> None:
    for origin in (None, "test", "null", "http://example.com:8080"):
        r = await options(server, path, {"Origin": origin} if origin else None)
        assert r.status == 204, (path, origin, r.status)
        assert_long_cacheable(r)
        assert int(r.get("access-control-max-age") or 0) > 1_000_000, r.headers
        assert r.get("access-control-allow-methods") == allowed, r.headers
        assert r.body == b""
        assert_cors(r, origin)


async def open_xhr_session(server: EchoServer, service: str = "echo") -> str:
    path = session_path(service)
    r = await post(server, path + "/xhr")
    assert (r.status, r.text) == (200, "o\n")
    return path


async def xhr_send(server: EchoServer, path: str, body: str | bytes, headers=None) -> Response:
    r = await post(server, path + "/xhr_send", body, headers)
    assert (r.status, r.body) == (204, b""), (r.status, r.body)
    return r


async def read_text_until(conn: Connection, sep: str, timeout: float = 5) -> str:
    return (await conn.read_until(sep.encode(), timeout)).decode("utf-8")


async def assert_body_ends(conn: Connection, timeout: float = 5) -> None:
    try:
        rest = await conn.body_ends(timeout)
    except TimeoutError:
        pytest.fail(f"the response body did not end within {timeout} s (no final chunk / connection close)")
    assert rest == b"", f"expected the response to end, got more data: {rest[:200]!r}"


async def retry_while_other_connection_open(make_attempt, timeout: float = 4) -> str:
    """Repeat a request while it still gets "Another connection still open".

    After a client aborts a request the server needs a moment to notice; this
    gives it up to `timeout` seconds instead of sleeping for a fixed time.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = await make_attempt()
        if answer != ANOTHER_CONNECTION or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


# -- greeting ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/echo", "/echo/"])
async def test_greeting(server: EchoServer, path: str) -> None:
    r = await get(server, path)
    assert r.status == 200
    assert content_type(r) == "text/plain;charset=UTF-8"
    assert r.text == "Welcome to SockJS!\n"
    assert_no_cookie(r)


@pytest.mark.parametrize("suffix", ["/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/"])
async def test_unknown_paths_under_the_base_url_are_404(server: EchoServer, suffix: str) -> None:
    assert (await get(server, "/echo" + suffix)).status == 404


# -- iframe page ---------------------------------------------------------------

IFRAME_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="@SOCKJS_URL@"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"""


@pytest.mark.parametrize(
    "suffix",
    [
        "/iframe.html",
        "/iframe-a.html",
        "/iframe-.html",
        "/iframe-0.1.2.html",
        "/iframe-0.1.2abc-dirty.2144.html",
        "/iframe-a.html?t=1234",
        "/iframe-0.1.2.html?t=123414",
        "/iframe-0.1.2abc-dirty.2144.html?t=qweqweq123",
    ],
)
async def test_iframe_page(server: EchoServer, suffix: str) -> None:
    r = await get(server, "/echo" + suffix)
    assert r.status == 200
    assert content_type(r) == "text/html;charset=UTF-8"
    assert_long_cacheable(r)
    assert r.get("etag"), r.headers
    assert not r.has("last-modified"), r.headers
    assert_no_cookie(r)
    body = r.text.strip()
    assert "SockJS.bootstrap_iframe()" in body
    found = re.search(r'<script src="([^"]*)"></script>', body)
    assert found, body
    sockjs_url = found.group(1)
    assert sockjs_url.startswith("/") or sockjs_url.startswith("http"), sockjs_url
    assert body == IFRAME_PAGE.replace("@SOCKJS_URL@", sockjs_url)


@pytest.mark.parametrize(
    "suffix",
    ["/iframe.htm", "/iframe", "/IFRAME.HTML", "/IFRAME", "/iframe.HTML", "/iframe.xml", "/iframe-/.html"],
)
async def test_malformed_iframe_names_are_404(server: EchoServer, suffix: str) -> None:
    assert (await get(server, "/echo" + suffix)).status == 404


async def test_iframe_etag_is_stable_and_if_none_match_gives_304(server: EchoServer) -> None:
    r1 = await get(server, "/echo/iframe.html")
    r2 = await get(server, "/echo/iframe.html")
    assert r1.get("etag")
    assert r1.get("etag") == r2.get("etag")
    r = await get(server, "/echo/iframe.html", {"If-None-Match": r1.get("etag")})
    assert r.status == 304
    assert not r.has("content-type"), r.headers
    assert r.body == b""
    # a different tag gets the page again
    r = await get(server, "/echo/iframe.html", {"If-None-Match": '"something-else"'})
    assert r.status == 200 and b"bootstrap_iframe" in r.body


# -- /info ---------------------------------------------------------------------


async def test_info(server: EchoServer) -> None:
    r = await get(server, "/echo/info")
    assert r.status == 200
    assert content_type(r) == "application/json;charset=UTF-8"
    assert_no_cookie(r)
    assert_not_cached(r)
    assert_cors(r)
    data = json.loads(r.body)
    assert data["websocket"] is True
    assert data["cookie_needed"] in (True, False)
    assert data["origins"] == ["*:*"]
    entropy = data["entropy"]
    assert isinstance(entropy, int) and not isinstance(entropy, bool)
    assert 0 <= entropy < 2**32


async def test_info_entropy_changes(server: EchoServer) -> None:
    values = [json.loads((await get(server, "/echo/info")).body)["entropy"] for _ in range(3)]
    assert len(set(values)) > 1, values
    assert values[0] != values[1]


async def test_info_cors_echoes_the_origin(server: EchoServer) -> None:
    r = await get(server, "/echo/info", {"Origin": "http://example.com"})
    assert_cors(r, "http://example.com")
    r = await get(server, "/echo/info", {"Origin": "null"})
    assert_cors(r, "null")


async def test_info_options(server: EchoServer) -> None:
    await assert_options(server, "/echo/info", "OPTIONS, GET")


async def test_info_options_with_null_origin_echoes_null(server: EchoServer) -> None:
    """The suite's test_options_null_origin: ``null`` is echoed (the suite of 2012 wanted ``*``)."""
    r = await options(server, "/echo/info", {"Origin": "null", "Access-Control-Request-Method": "POST"})
    assert r.status == 204
    assert r.body == b""
    assert r.get("access-control-allow-origin") == "null"
    assert r.get("access-control-allow-credentials") == "true"


async def test_info_of_the_service_without_websocket(server: EchoServer) -> None:
    r = await get(server, "/disabled_websocket_echo/info")
    assert r.status == 200
    assert json.loads(r.body)["websocket"] is False


async def test_info_of_the_cookie_service(server: EchoServer) -> None:
    r = await get(server, "/cookie_needed_echo/info")
    assert r.status == 200
    assert_no_cookie(r)
    assert json.loads(r.body)["cookie_needed"] is True


# -- session urls --------------------------------------------------------------


@pytest.mark.parametrize("part", ["/a/a", "/_/_", "/1/1", "/abcdefgh_i-j%20/abcdefg_i-j%20"])
async def test_any_server_and_session_id_is_accepted(server: EchoServer, part: str) -> None:
    # the fixed ids get a unique tail so that re-runs don't meet an old session
    r = await post(server, "/echo" + part + uuid.uuid4().hex[:8] + "/xhr")
    assert (r.status, r.text) == (200, "o\n")


@pytest.mark.parametrize("part", ["//", "/a./a", "/a/a.", "/./.", "/", "///"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_invalid_session_paths_are_404(server: EchoServer, part: str, method: str) -> None:
    r = await fetch(
        HOST, server.port, method, "/echo" + part + "/xhr", None, b"" if method == "POST" else None
    )
    assert r.status == 404, (part, method, r.status, r.body[:200])


async def test_server_id_is_ignored(server: EchoServer) -> None:
    sid = str(uuid.uuid4())
    r = await post(server, f"/echo/000/{sid}/xhr")
    assert (r.status, r.text) == (200, "o\n")
    await xhr_send(server, f"/echo/000/{sid}", '["a"]')
    r = await post(server, f"/echo/999/{sid}/xhr")
    assert (r.status, r.text) == (200, 'a["a"]\n')


# -- protocol basics over xhr polling ------------------------------------------


async def test_xhr_session_open_send_and_poll(server: EchoServer) -> None:
    path = session_path()
    r = await post(server, path + "/xhr")
    assert r.status == 200
    assert r.text == "o\n"
    assert content_type(r) == "application/javascript;charset=UTF-8"
    assert_cors(r)
    assert_not_cached(r)

    r = await xhr_send(server, path, '["x"]')
    assert content_type(r) == "text/plain;charset=UTF-8"
    assert_cors(r)
    assert_not_cached(r)

    r = await post(server, path + "/xhr")
    assert (r.status, r.text) == (200, 'a["x"]\n')


async def test_xhr_messages_are_batched_in_one_frame(server: EchoServer) -> None:
    path = await open_xhr_session(server)
    await xhr_send(server, path, '["a","b"]')
    await xhr_send(server, path, '["c"]')
    r = await post(server, path + "/xhr")
    assert r.text == 'a["a","b","c"]\n'


async def test_a_large_backlog_is_cut_into_frames_of_about_64k(server: EchoServer) -> None:
    path = await open_xhr_session(server)
    messages = [f"{i:04d}" + "x" * 1996 for i in range(100)]  # 200,000 characters
    await xhr_send(server, path, json.dumps(messages))
    received: list[str] = []
    while len(received) < len(messages):
        r = await post(server, path + "/xhr")
        assert r.text.startswith("a[") and r.text.endswith("]\n"), r.text[:40]
        batch = json.loads(r.text[1:])
        assert 0 < sum(len(m) for m in batch) <= 64 * 1024, len(batch)
        received += batch
    assert received == messages  # nothing lost or reordered across polls


async def test_xhr_send_to_unknown_session_is_404(server: EchoServer) -> None:
    r = await post(server, session_path() + "/xhr_send", '["x"]')
    assert r.status == 404
    r = await post(server, "/echo/000/bad_session/xhr_send", '["x"]')
    assert r.status == 404


async def test_xhr_send_with_broken_or_missing_json(server: EchoServer) -> None:
    path = await open_xhr_session(server)
    r = await post(server, path + "/xhr_send", '["x')
    assert r.status == 500
    assert "Broken JSON encoding." in r.text
    r = await post(server, path + "/xhr_send", "")
    assert r.status == 500
    assert "Payload expected." in r.text
    # the session survives both
    await xhr_send(server, path, '["a"]')
    r = await post(server, path + "/xhr")
    assert (r.status, r.text) == (200, 'a["a"]\n')


async def test_xhr_send_accepts_any_content_type(server: EchoServer) -> None:
    path = await open_xhr_session(server)
    types = [
        "text/plain",
        "T",
        "application/json",
        "application/xml",
        "",
        "application/json; charset=utf-8",
        "text/xml; charset=utf-8",
        "text/xml",
    ]
    for ct in types:
        await xhr_send(server, path, '["a"]', {"Content-Type": ct})
    await xhr_send(server, path, '["b"]')  # and no Content-Type at all
    r = await post(server, path + "/xhr")
    assert r.text == "a[" + ",".join(['"a"'] * len(types) + ['"b"']) + "]\n"


async def test_second_concurrent_poll_gets_another_connection_still_open(server: EchoServer) -> None:
    path = await open_xhr_session(server)
    pending = await send_only(server, "POST", path + "/xhr")
    try:
        await asyncio.sleep(0.3)  # let the server take the first poll
        r = await post(server, path + "/xhr")
        assert (r.status, r.text) == (200, ANOTHER_CONNECTION)
        # the first poll is still the session's receiver and gets the next message
        await xhr_send(server, path, '["z"]')
        await pending.read_head("POST")
        assert pending.head is not None and pending.head.status == 200
        assert (await pending.read_body()).decode() == 'a["z"]\n'
    finally:
        await pending.close()


async def test_xhr_options(server: EchoServer) -> None:
    for suffix in ("/xhr", "/xhr_send"):
        await assert_options(server, "/echo/abc/abc" + suffix, "OPTIONS, POST")


async def test_xhr_cors_origin_is_echoed(server: EchoServer) -> None:
    path = session_path()
    r = await post(server, path + "/xhr", headers={"Origin": "http://example.com"})
    assert r.text == "o\n"
    assert_cors(r, "http://example.com")
    r = await post(server, path + "/xhr_send", '["x"]', {"Origin": "http://example.com"})
    assert r.status == 204
    assert_cors(r, "http://example.com")


@pytest.mark.parametrize(
    ("request_headers", "allow_headers"), [("a, b, c", "a, b, c"), ("", None), (None, None)]
)
async def test_access_control_request_headers_are_echoed(
    server: EchoServer, request_headers: str | None, allow_headers: str | None
) -> None:
    headers = {} if request_headers is None else {"Access-Control-Request-Headers": request_headers}
    r = await post(server, session_path() + "/xhr", headers=headers)
    assert r.status == 200
    assert_cors(r)
    assert r.get("access-control-allow-headers") == allow_headers, r.headers


async def test_close_service_over_xhr(server: EchoServer) -> None:
    path = await open_xhr_session(server, "close")
    for _ in range(2):  # the close frame is served again until the session expires
        r = await post(server, path + "/xhr")
        assert (r.status, r.text) == (200, GO_AWAY)


# -- xhr streaming -------------------------------------------------------------


async def test_xhr_streaming(server: EchoServer) -> None:
    path = session_path()
    conn, head = await open_stream(server, "POST", path + "/xhr_streaming")
    try:
        assert head.status == 200
        assert content_type(head) == "application/javascript;charset=UTF-8"
        assert_cors(head)
        assert_not_cached(head)
        assert await conn.read_exact(len(PRELUDE)) == PRELUDE
        assert await read_text_until(conn, "\n") == "o\n"
        await xhr_send(server, path, '["x"]')
        assert await read_text_until(conn, "\n") == 'a["x"]\n'
        await xhr_send(server, path, '["y","z"]')
        assert await read_text_until(conn, "\n") == 'a["y","z"]\n'
    finally:
        conn.abort()


async def test_xhr_streaming_options(server: EchoServer) -> None:
    await assert_options(server, "/echo/abc/abc/xhr_streaming", "OPTIONS, POST")


async def test_xhr_streaming_response_limit(server: EchoServer) -> None:
    path = session_path()
    conn, head = await open_stream(server, "POST", path + "/xhr_streaming")
    try:
        assert head.status == 200
        assert await conn.read_exact(len(PRELUDE)) == PRELUDE
        assert await read_text_until(conn, "\n") == "o\n"
        msg = '"' + "x" * 128 + '"'
        # 31 frames of 134 bytes pass 4096 bytes only with the last one
        for i in range(31):
            await xhr_send(server, path, "[" + msg + "]")
            assert await read_text_until(conn, "\n") == "a[" + msg + "]\n", f"message {i}"
        await assert_body_ends(conn, 3)
    finally:
        conn.abort()
    # the session lives on: the next streaming request continues it
    conn, head = await open_stream(server, "POST", path + "/xhr_streaming")
    try:
        assert await conn.read_exact(len(PRELUDE)) == PRELUDE
        await xhr_send(server, path, '["more"]')
        assert await read_text_until(conn, "\n") == 'a["more"]\n'
    finally:
        conn.abort()


# -- eventsource ---------------------------------------------------------------


async def test_eventsource(server: EchoServer) -> None:
    path = session_path()
    conn, head = await open_stream(server, "GET", path + "/eventsource")
    try:
        assert head.status == 200
        assert content_type(head) == "text/event-stream"
        assert_not_cached(head)
        assert await conn.read_exact(2) == b"\r\n"
        assert await read_text_until(conn, "\r\n\r\n") == "data: o\r\n\r\n"
        await xhr_send(server, path, '["x"]')
        assert await read_text_until(conn, "\r\n\r\n") == 'data: a["x"]\r\n\r\n'
        # leading spaces, NUL and line breaks stay JSON-escaped inside the data line
        await xhr_send(server, path, r'["  \u0000\n\r "]')
        assert await read_text_until(conn, "\r\n\r\n") == 'data: a["  \\u0000\\n\\r "]\r\n\r\n'
    finally:
        conn.abort()


async def test_eventsource_response_limit(server: EchoServer) -> None:
    path = session_path()
    conn, head = await open_stream(server, "GET", path + "/eventsource")
    try:
        assert head.status == 200
        assert await conn.read_exact(2) == b"\r\n"
        assert await read_text_until(conn, "\r\n\r\n") == "data: o\r\n\r\n"
        msg = '"' + "x" * 4096 + '"'
        await xhr_send(server, path, "[" + msg + "]")
        assert await read_text_until(conn, "\r\n\r\n") == "data: a[" + msg + "]\r\n\r\n"
        await assert_body_ends(conn, 3)
    finally:
        conn.abort()


# -- htmlfile ------------------------------------------------------------------

HTMLFILE_HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.@CALLBACK@;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"""


def htmlfile_frame(payload: str) -> str:
    return "<script>\np(" + json.dumps(payload) + ");\n</script>\r\n"


async def test_htmlfile(server: EchoServer) -> None:
    path = session_path()
    conn, head = await open_stream(server, "GET", path + "/htmlfile?c=%63allback")
    try:
        assert head.status == 200
        assert content_type(head) == "text/html;charset=UTF-8"
        assert_not_cached(head)
        first = htmlfile_frame("o")
        assert first == '<script>\np("o");\n</script>\r\n'
        data = await read_text_until(conn, first)
        page = data[: -len(first)]
        assert page.strip() == HTMLFILE_HEAD.replace("@CALLBACK@", "callback")
        assert len(page.encode()) > 1024, "the htmlfile head must be padded beyond 1 KiB"
        await xhr_send(server, path, '["x"]')
        assert await read_text_until(conn, "\r\n") == '<script>\np("a[\\"x\\"]");\n</script>\r\n'
    finally:
        conn.abort()


@pytest.mark.parametrize("transport", ["htmlfile", "jsonp"])
async def test_callback_parameter_is_required(server: EchoServer, transport: str) -> None:
    r = await get(server, f"/echo/a/a/{transport}")
    assert r.status == 500
    assert '"callback" parameter required' in r.text


async def test_htmlfile_response_limit(server: EchoServer) -> None:
    path = session_path()
    conn, head = await open_stream(server, "GET", path + "/htmlfile?c=callback")
    try:
        assert head.status == 200
        await read_text_until(conn, htmlfile_frame("o"))
        msg = "x" * 4096
        await xhr_send(server, path, '["' + msg + '"]')
        assert await read_text_until(conn, "\r\n") == '<script>\np("a[\\"' + msg + '\\"]");\n</script>\r\n'
        await assert_body_ends(conn, 3)
    finally:
        conn.abort()


# -- jsonp polling -------------------------------------------------------------


async def test_jsonp(server: EchoServer) -> None:
    path = session_path()
    r = await get(server, path + "/jsonp?c=%63allback")
    assert r.status == 200
    assert content_type(r) == "application/javascript;charset=UTF-8"
    assert_not_cached(r)
    assert r.text == '/**/callback("o");\r\n'

    r = await post(server, path + "/jsonp_send", "d=%5B%22x%22%5D", FORM)
    assert (r.status, r.text) == (200, "ok")
    assert content_type(r) == "text/plain;charset=UTF-8"
    assert_not_cached(r)

    r = await get(server, path + "/jsonp?c=%63allback")
    assert r.status == 200
    assert r.text == '/**/callback("a[\\"x\\"]");\r\n'


async def test_jsonp_send_with_broken_or_missing_json(server: EchoServer) -> None:
    path = session_path()
    r = await get(server, path + "/jsonp?c=x")
    assert r.text == '/**/x("o");\r\n'
    r = await post(server, path + "/jsonp_send", "d=%5B%22x", FORM)
    assert r.status == 500
    assert "Broken JSON encoding." in r.text
    for body in ("", "d=", "p=p"):
        r = await post(server, path + "/jsonp_send", body, FORM)
        assert r.status == 500, body
        assert "Payload expected." in r.text, body
    r = await post(server, path + "/jsonp_send", "d=%5B%22b%22%5D", FORM)
    assert (r.status, r.text) == (200, "ok")
    r = await get(server, path + "/jsonp?c=x")
    assert (r.status, r.text) == (200, '/**/x("a[\\"b\\"]");\r\n')


async def test_jsonp_send_form_and_plain_text_bodies(server: EchoServer) -> None:
    path = session_path()
    assert (await get(server, path + "/jsonp?c=x")).text == '/**/x("o");\r\n'
    r = await post(server, path + "/jsonp_send", "d=%5B%22abc%22%5D", FORM)
    assert (r.status, r.text) == (200, "ok")
    # a text/plain body is the JSON itself, not url-decoded
    r = await post(server, path + "/jsonp_send", '["%61bc"]', {"Content-Type": "text/plain"})
    assert (r.status, r.text) == (200, "ok")
    r = await get(server, path + "/jsonp?c=x")
    assert (r.status, r.text) == (200, '/**/x("a[\\"abc\\",\\"%61bc\\"]");\r\n')


async def test_jsonp_send_to_unknown_session_is_404(server: EchoServer) -> None:
    r = await post(server, session_path() + "/jsonp_send", "d=%5B%22x%22%5D", FORM)
    assert r.status == 404


async def test_close_service_over_jsonp(server: EchoServer) -> None:
    path = session_path("close")
    assert (await get(server, path + "/jsonp?c=x")).text == '/**/x("o");\r\n'
    for _ in range(2):
        r = await get(server, path + "/jsonp?c=x")
        assert r.text == '/**/x("c[3000,\\"Go away!\\"]");\r\n'


# -- JSESSIONID ----------------------------------------------------------------


def assert_jsessionid(r: Head, value: str = "dummy") -> None:
    cookie = r.get("set-cookie")
    assert cookie, r.headers
    parts = [p.strip() for p in cookie.split(";")]
    assert parts[0] == f"JSESSIONID={value}", cookie
    assert parts[1].lower() == "path=/", cookie


async def test_jsessionid_on_xhr(server: EchoServer) -> None:
    r = await post(server, session_path("cookie_needed_echo") + "/xhr")
    assert (r.status, r.text) == (200, "o\n")
    assert_jsessionid(r)
    # a cookie the client already has is sent back as it is
    r = await post(
        server, session_path("cookie_needed_echo") + "/xhr", headers={"Cookie": "JSESSIONID=abcdef"}
    )
    assert (r.status, r.text) == (200, "o\n")
    assert_jsessionid(r, "abcdef")


@pytest.mark.parametrize(
    ("method", "transport"),
    [("POST", "xhr_streaming"), ("GET", "eventsource"), ("GET", "htmlfile?c=%63allback")],
)
async def test_jsessionid_on_streaming_transports(server: EchoServer, method: str, transport: str) -> None:
    conn, head = await open_stream(server, method, session_path("cookie_needed_echo") + "/" + transport)
    try:
        assert head.status == 200
        assert_jsessionid(head)
    finally:
        conn.abort()


async def test_jsessionid_on_jsonp(server: EchoServer) -> None:
    path = session_path("cookie_needed_echo")
    r = await get(server, path + "/jsonp?c=%63allback")
    assert r.status == 200
    assert_jsessionid(r)
    assert r.text == '/**/callback("o");\r\n'
    r = await post(server, path + "/jsonp_send", "d=%5B%22x%22%5D", FORM)
    assert (r.status, r.text) == (200, "ok")
    assert_jsessionid(r)


async def test_no_jsessionid_without_cookie_needed(server: EchoServer) -> None:
    r = await post(server, session_path() + "/xhr")
    assert r.text == "o\n"
    assert_no_cookie(r)


# -- websocket transport -------------------------------------------------------


async def recv(ws, timeout: float = 5) -> str:
    return await asyncio.wait_for(ws.recv(), timeout)


async def assert_ws_closes(ws, timeout: float = 5) -> None:
    """The next thing to happen on `ws` must be the end of the connection."""
    with pytest.raises(ConnectionClosed):
        message = await asyncio.wait_for(ws.recv(), timeout)
        pytest.fail(f"expected the connection to close, got message {message!r}")


def ws_session_url(server: EchoServer, service: str = "echo") -> str:
    return server.ws(session_path(service) + "/websocket")


async def test_websocket_echo(server: EchoServer) -> None:
    async with ws_connect(ws_session_url(server), open_timeout=5, close_timeout=2) as ws:
        assert await recv(ws) == "o"
        await ws.send('["a"]')
        assert await recv(ws) == 'a["a"]'
        await ws.send('["c","d"]')  # several messages in one websocket message
        frames = [await recv(ws)]
        while "d" not in frames[-1]:
            frames.append(await recv(ws))
        assert frames in (['a["c","d"]'], ['a["c"]', 'a["d"]']), frames


async def test_websocket_ignores_empty_messages(server: EchoServer) -> None:
    async with ws_connect(ws_session_url(server), open_timeout=5, close_timeout=2) as ws:
        assert await recv(ws) == "o"
        await ws.send("")
        await ws.send('["a"]')
        assert await recv(ws) == 'a["a"]'


async def test_websocket_broken_json_closes_the_connection(server: EchoServer) -> None:
    async with ws_connect(ws_session_url(server), open_timeout=5, close_timeout=2) as ws:
        assert await recv(ws) == "o"
        await ws.send('["a')
        await assert_ws_closes(ws)


async def test_websocket_session_id_may_be_reused(server: EchoServer) -> None:
    url = ws_session_url(server)
    async with ws_connect(url, open_timeout=5, close_timeout=2) as ws1:
        assert await recv(ws1) == "o"
        async with ws_connect(url, open_timeout=5, close_timeout=2) as ws2:
            assert await recv(ws2) == "o"
            await ws1.send('["a"]')
            assert await recv(ws1) == 'a["a"]'
            await ws2.send('["b"]')
            assert await recv(ws2) == 'a["b"]'
    async with ws_connect(url, open_timeout=5, close_timeout=2) as ws1:
        assert await recv(ws1) == "o"
        await ws1.send('["a"]')
        assert await recv(ws1) == 'a["a"]'


async def test_close_service_over_websocket(server: EchoServer) -> None:
    async with ws_connect(ws_session_url(server, "close"), open_timeout=5, close_timeout=2) as ws:
        assert await recv(ws) == "o"
        assert await recv(ws) == GO_AWAY.rstrip("\n")
        await assert_ws_closes(ws)


async def test_plain_get_on_websocket_url_is_400(server: EchoServer) -> None:
    r = await get(server, "/echo/0/0/websocket")
    assert r.status == 400
    assert 'Can "Upgrade" only to "WebSocket".' in r.text


async def test_websocket_with_connection_close_header_is_400(server: EchoServer) -> None:
    r = await get(server, "/echo/0/0/websocket", {"Upgrade": "WebSocket", "Connection": "close"})
    assert r.status == 400


@pytest.mark.parametrize("headers", [{"Upgrade": "WebSocket", "Connection": "Upgrade"}, {}])
async def test_post_on_websocket_url_is_405(server: EchoServer, headers: dict[str, str]) -> None:
    r = await post(server, "/echo/0/0/websocket", headers=headers)
    assert r.status == 405
    assert r.get("allow"), r.headers
    assert not r.has("content-type"), r.headers
    assert r.body == b""


def upgrade_headers(version: str, connection: str = "Upgrade") -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": connection,
        "Sec-WebSocket-Version": version,
        "Sec-WebSocket-Origin": "http://asd",
        "Sec-WebSocket-Key": "x3JJHMbDL1EzLkh9GBhXDw==",
    }


@pytest.mark.parametrize("version", ["7", "8", "13"])
async def test_websocket_handshake_headers(server: EchoServer, version: str) -> None:
    conn = await Connection.open(HOST, server.port)
    try:
        head = await conn.request("GET", session_path() + "/websocket", upgrade_headers(version))
        assert head.status == 101
        assert head.get("sec-websocket-accept") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
        assert (head.get("connection") or "").lower() == "upgrade"
        assert (head.get("upgrade") or "").lower() == "websocket"
        assert not head.has("content-length"), head.headers
    finally:
        conn.abort()


async def test_websocket_with_keep_alive_upgrade_connection_header(server: EchoServer) -> None:
    """Firefox 6 sends `Connection: keep-alive, Upgrade`."""
    conn = await Connection.open(HOST, server.port)
    try:
        head = await conn.request(
            "GET", session_path() + "/websocket", upgrade_headers("7", "keep-alive, Upgrade")
        )
        assert head.status == 101
    finally:
        conn.abort()


async def test_websocket_is_404_when_disabled(server: EchoServer) -> None:
    path = session_path("disabled_websocket_echo") + "/websocket"
    r = await get(server, path, upgrade_headers("13"))
    assert r.status == 404
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(server.ws(path), open_timeout=5):
            pass
    assert info.value.response.status_code == 404
    # the other transports of that service still work
    r = await post(server, session_path("disabled_websocket_echo") + "/xhr")
    assert (r.status, r.text) == (200, "o\n")


async def test_raw_websocket_echoes_text_verbatim(server: EchoServer) -> None:
    async with ws_connect(server.ws("/echo/websocket"), open_timeout=5, close_timeout=2) as ws:
        await ws.send("Hello world!\uffff")
        assert await recv(ws) == "Hello world!\uffff"
        await ws.send('["not", "sockjs framing"]')
        assert await recv(ws) == '["not", "sockjs framing"]'


async def test_raw_websocket_on_close_service_closes(server: EchoServer) -> None:
    async with ws_connect(server.ws("/close/websocket"), open_timeout=5, close_timeout=2) as ws:
        await assert_ws_closes(ws)


# -- JSON unicode encoding -----------------------------------------------------

# Characters the server must escape as \uXXXX in what it sends (above U+00FF; the
# control characters below are checked separately since JSON has short escapes
# like \n for some of them).
SERVER_ESCAPED_RANGES = [(0x200C, 0x200F), (0x2028, 0x202F), (0x2060, 0x206F), (0xFFF0, 0xFFFF)]

# Characters sockjs-client escapes before sending; the server must decode them.
CLIENT_ESCAPED = """
0022 005c 0000-001f 007f-009f 00ad 0300-0333 033d-0346 034a-034c 0350-0352 0357-0358
035c-0362 0374 037e 0387 0591-05af 05c4 0600-0604 0610-0617 0653-0654 0657-065b 065d-065e
06df-06e2 06eb-06ec 070f 0730 0732-0733 0735-0736 073a 073d 073f-0741 0743 0745 0747
07eb-07f1 0951 0958-095f 09dc-09dd 09df 0a33 0a36 0a59-0a5b 0a5e 0b5c-0b5d 0e38-0e39 0f43
0f4d 0f52 0f57 0f5c 0f69 0f72-0f76 0f78 0f80-0f83 0f93 0f9d 0fa2 0fa7 0fac 0fb9 17b4-17b5
1939-193a 1a17 1b6b 1cda-1cdb 1dc0-1dcf 1dfc 1dfe 1f71 1f73 1f75 1f77 1f79 1f7b 1f7d 1fbb
1fbe 1fc9 1fcb 1fd3 1fdb 1fe3 1feb 1fee-1fef 1ff9 1ffb 1ffd 2000-20ff 2126 212a-212b
2329-232a 2adc 302b-302c aab2-aab3 f900-fa0d fa10 fa12 fa15-fa1e fa20 fa22 fa25-fa26
fa2a-fa2d fa30-fa6d fa70-fad9 fb1d fb1f fb2a-fb36 fb38-fb3c fb3e fb40-fb41 fb43-fb44
fb46-fb4e feff fff0-ffff
"""


def code_points(spec: str) -> list[int]:
    points: set[int] = set()
    for item in spec.split():
        low, _, high = item.partition("-")
        points.update(range(int(low, 16), int(high or low, 16) + 1))
    return sorted(points)


async def poll_message_frame(server: EchoServer, path: str) -> str:
    r = await post(server, path + "/xhr")
    assert r.status == 200
    text = r.text
    assert text.startswith("a[") and text.endswith("]\n"), text[:200]
    return text


async def test_server_escapes_unsafe_characters(server: EchoServer) -> None:
    chars = [chr(c) for low, high in SERVER_ESCAPED_RANGES for c in range(low, high + 1)]
    path = await open_xhr_session(server)
    await xhr_send(server, path, ('["' + "".join(chars) + '"]').encode("utf-8"))
    frame = await poll_message_frame(server, path)
    raw = frame[len('a["') : -len('"]\n')]
    assert raw == "".join(f"\\u{ord(c):04x}" for c in chars)


async def test_server_escapes_control_characters(server: EchoServer) -> None:
    message = "".join(chr(c) for c in range(0x20))
    path = await open_xhr_session(server)
    await xhr_send(server, path, json.dumps([message]))
    frame = await poll_message_frame(server, path)
    inner = frame[1:-1]  # without the frame type and the frame delimiter
    assert not re.search("[\x00-\x1f]", inner), f"raw control characters in {inner!r}"
    assert json.loads(inner) == [message]


async def test_server_decodes_client_escaped_characters(server: EchoServer) -> None:
    points = code_points(CLIENT_ESCAPED)
    escaped = '"' + "".join(f"\\u{c:04x}" for c in points) + '"'
    path = await open_xhr_session(server)
    await xhr_send(server, path, "[" + escaped + "]")
    frame = await poll_message_frame(server, path)
    assert json.loads(frame[1:-1]) == ["".join(chr(c) for c in points)]


async def test_websocket_frames_escape_unsafe_characters(server: EchoServer) -> None:
    chars = "\u2028\u2029\u200c\u2060\ufff0\uffff"
    async with ws_connect(ws_session_url(server), open_timeout=5, close_timeout=2) as ws:
        assert await recv(ws) == "o"
        await ws.send(json.dumps([chars], ensure_ascii=False))
        frame = await recv(ws)
        assert frame == 'a["' + "".join(f"\\u{ord(c):04x}" for c in chars) + '"]'


# -- handling close ------------------------------------------------------------


async def test_close_frame_is_served_to_every_streaming_request(server: EchoServer) -> None:
    path = session_path("close")
    c1, h1 = await open_stream(server, "POST", path + "/xhr_streaming")
    c2 = None
    try:
        assert h1.status == 200
        assert await c1.read_exact(len(PRELUDE)) == PRELUDE
        assert await read_text_until(c1, "\n") == "o\n"
        assert await read_text_until(c1, "\n") == GO_AWAY
        c2, h2 = await open_stream(server, "POST", path + "/xhr_streaming")
        assert h2.status == 200
        assert await c2.read_exact(len(PRELUDE)) == PRELUDE
        assert await read_text_until(c2, "\n") == GO_AWAY
        await assert_body_ends(c1, 3)
        await assert_body_ends(c2, 3)
    finally:
        c1.abort()
        if c2:
            c2.abort()


async def test_second_streaming_request_gets_another_connection_still_open(server: EchoServer) -> None:
    path = session_path()
    c1, _ = await open_stream(server, "POST", path + "/xhr_streaming")
    c2 = None
    try:
        assert await c1.read_exact(len(PRELUDE)) == PRELUDE
        assert await read_text_until(c1, "\n") == "o\n"
        c2, h2 = await open_stream(server, "POST", path + "/xhr_streaming")
        assert h2.status == 200
        assert await c2.read_exact(len(PRELUDE)) == PRELUDE
        assert await read_text_until(c2, "\n") == ANOTHER_CONNECTION
        await assert_body_ends(c2, 3)
        # the first request still owns the session
        await xhr_send(server, path, '["still here"]')
        assert await read_text_until(c1, "\n") == 'a["still here"]\n'
    finally:
        c1.abort()
        if c2:
            c2.abort()


async def test_aborting_a_streaming_request_closes_the_session(server: EchoServer) -> None:
    path = session_path()
    c1, _ = await open_stream(server, "POST", path + "/xhr_streaming")
    assert await c1.read_exact(len(PRELUDE)) == PRELUDE
    assert await read_text_until(c1, "\n") == "o\n"

    c2, _ = await open_stream(server, "POST", path + "/xhr_streaming")
    assert await c2.read_exact(len(PRELUDE)) == PRELUDE
    assert await read_text_until(c2, "\n") == ANOTHER_CONNECTION
    await assert_body_ends(c2, 3)
    c2.abort()

    c1.abort()

    async def attempt() -> str:
        conn, head = await open_stream(server, "POST", path + "/xhr_streaming")
        try:
            assert head.status == 200
            assert await conn.read_exact(len(PRELUDE), 3) == PRELUDE
            return await read_text_until(conn, "\n", 3)
        finally:
            conn.abort()

    answer = await retry_while_other_connection_open(attempt)
    assert answer in ("o\n", INTERRUPTED)


async def test_aborting_a_polling_request_closes_the_session(server: EchoServer) -> None:
    path = await open_xhr_session(server)
    pending = await send_only(server, "POST", path + "/xhr")
    await asyncio.sleep(0.3)  # let the server take the poll
    r = await post(server, path + "/xhr")
    assert r.text == ANOTHER_CONNECTION
    pending.abort()

    async def attempt() -> str:
        return (await post(server, path + "/xhr", timeout=3)).text

    answer = await retry_while_other_connection_open(attempt)
    assert answer in ("o\n", INTERRUPTED)


# -- HTTP/1.0 and HTTP/1.1 -----------------------------------------------------


async def test_http10_greeting(server: EchoServer) -> None:
    conn = await Connection.open(HOST, server.port)
    try:
        head = await conn.request("GET", "/echo", {"Connection": "Keep-Alive"}, version="1.0")
        assert head.status == 200
        assert head.version in ("1.0", "1.1")
        assert not head.has("transfer-encoding"), head.headers
        if not head.has("content-length"):
            assert (head.get("connection") or "").lower() == "close", head.headers
            assert await conn.read_body() == b"Welcome to SockJS!\n"
            assert await conn.closed_by_peer()
        else:
            assert int(head.get("content-length") or 0) == 19
            assert await conn.read_body() == b"Welcome to SockJS!\n"
            connection = (head.get("connection") or "").lower()
            if connection in ("close", ""):
                assert await conn.closed_by_peer()
            else:
                assert connection == "keep-alive", head.headers
                head = await conn.request("GET", "/echo", {"Connection": "Keep-Alive"}, version="1.0")
                assert head.status == 200
                assert await conn.read_body() == b"Welcome to SockJS!\n"
    finally:
        conn.abort()


async def test_http10_streaming(server: EchoServer) -> None:
    conn = await Connection.open(HOST, server.port)
    try:
        head = await conn.request(
            "POST", session_path("close") + "/xhr_streaming", {"Connection": "Keep-Alive"}, b"", version="1.0"
        )
        assert head.status == 200
        assert not head.has("transfer-encoding"), head.headers
        assert not head.has("content-length"), head.headers
        assert await conn.read_exact(len(PRELUDE)) == PRELUDE
        assert await conn.read_exact(2) == b"o\n"
        assert await conn.read_exact(len(GO_AWAY)) == GO_AWAY.encode()
        # without Content-Length or chunking, only closing the connection ends the body
        await assert_body_ends(conn, 3)
    finally:
        conn.abort()


async def test_http11_greeting_keeps_the_connection(server: EchoServer) -> None:
    conn = await Connection.open(HOST, server.port)
    try:
        head = await conn.request("GET", "/echo", {"Connection": "Keep-Alive"})
        assert head.version == "1.1"
        assert (head.get("connection") or "").lower() in ("keep-alive", ""), head.headers
        if head.has("content-length"):
            assert int(head.get("content-length") or 0) == 19
            assert not head.has("transfer-encoding")
        else:
            assert (head.get("transfer-encoding") or "").lower() == "chunked", head.headers
        assert await conn.read_body() == b"Welcome to SockJS!\n"
        head = await conn.request("GET", "/echo", {"Connection": "Keep-Alive"})
        assert head.status == 200
        assert await conn.read_body() == b"Welcome to SockJS!\n"
    finally:
        conn.abort()


async def test_http11_streaming_is_chunked(server: EchoServer) -> None:
    conn = await Connection.open(HOST, server.port)
    try:
        head = await conn.request(
            "POST", session_path("close") + "/xhr_streaming", {"Connection": "Keep-Alive"}, b""
        )
        assert head.status == 200
        assert (head.get("transfer-encoding") or "").lower() == "chunked", head.headers
        assert not head.has("content-length"), head.headers
        assert await conn.read_exact(len(PRELUDE)) == PRELUDE
        assert await read_text_until(conn, "\n") == "o\n"
        assert await read_text_until(conn, "\n") == GO_AWAY
        await assert_body_ends(conn, 3)
    finally:
        conn.abort()
