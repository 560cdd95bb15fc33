"""A SockJS endpoint on aiohttp: protocol 0.3.3's URL scheme, answered as today's servers answer it.

What the answers look like follows the sockjs-protocol repository's current
suite (``sockjs-protocol.py``) and sockjs-node 0.3.24: ``no-transform`` in
``Cache-Control``, ``/**/`` before JSONP callbacks, ``Origin: null`` echoed,
the iframe page loading the client before bootstrapping it, ``text/event-stream``
without a charset, and the first frame of a response in a chunk of its own.
sockjs-client 1.1.4 to 1.6 speak to it on every transport.

Under a base path (``/chat-websocket``)::

    GET  /                     greeting
    GET  /info                 capabilities (OPTIONS too)
    GET  /iframe[-ver].html    the page cross-domain transports load
    GET  /websocket            raw WebSocket, no SockJS framing
    *    /{server}/{session}/{transport}
         websocket | xhr | xhr_streaming | eventsource | htmlfile | jsonp   (receive)
         xhr_send | jsonp_send                                            (send)

One catch-all route per endpoint and our own dispatch, so that unknown paths
are 404 and wrong methods 405 exactly as the protocol wants. Mount the
application with ``handler_cancellation=True`` so that a client that drops a
waiting request is noticed at once rather than at the next heartbeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import parse_qs

from aiohttp import HttpVersion11, WSMsgType, web

from ..origins import OriginPolicy
from ..wsio import WAKE, ReadGate, close_reason, reset, wake, write_message
from .frames import PayloadError, decode_payload, json_string
from .session import Connection, Handler, RequestInfo, Session, State
from .settings import SockJSSettings

log = logging.getLogger(__name__)

# As sockjs-node sends it: no-transform keeps proxies (and mobile "accelerators")
# from recompressing or rewriting a stream of frames.
NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
ONE_YEAR = 365 * 24 * 3600

_ID = re.compile(r"[^/.]+")
_IFRAME = re.compile(r"iframe[0-9a-z_.-]*\.html")
_CALLBACK = re.compile(r"[a-zA-Z0-9_.]+")

_IFRAME_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="%s"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>
"""

_HTMLFILE_HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.%s;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>
"""

HandlerFactory = Callable[[Connection], Handler]


@dataclass
class SockJSOptions(SockJSSettings):
    """The settings, and what the node derives from the rest of its config."""

    max_message_size: int = 1024 * 1024
    # A send (xhr_send, jsonp_send) whose body takes longer gets 408 and its connection closes.
    body_timeout_s: float = 15.0
    # Cookies that carry the user's credential (auth.cookie): with the Authorization
    # header and the client's address, they make who owns a session (see _owner).
    credential_cookies: tuple[str, ...] = ()


class _Refused(Exception):
    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response


def _date(offset_s: float) -> str:
    return formatdate(time.time() + offset_s, usegmt=True)


def _plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="UTF-8")


def _empty(status: int, headers: dict[str, str] | None = None) -> web.Response:
    """A response without body or Content-Type (aiohttp adds one to any body)."""
    response = web.Response(status=status, headers=headers)
    response.body = None
    return response


class HttpReceiver:
    """A receiving HTTP response; the request's handler task writes what the session gives it."""

    __slots__ = (
        "_format", "_streaming", "_limit", "_chunks", "_pending", "_event", "_ended", "_sent", "_transport",
    )

    def __init__(
        self, fmt: Callable[[str], bytes], streaming: bool, limit: int, transport: asyncio.Transport | None
    ) -> None:
        self._format = fmt
        self._streaming = streaming
        self._limit = limit
        self._chunks: list[bytes] = []
        self._pending = 0  # bytes in _chunks: asked after every message sent, so kept, not summed
        self._event = asyncio.Event()
        self._ended = False
        self._sent = 0
        self._transport = transport

    def send_frame(self, frame: str) -> bool:
        data = self._format(frame)
        self._chunks.append(data)
        self._pending += len(data)
        self._sent += len(data)
        self._event.set()
        return not self._streaming or self._sent >= self._limit

    def end(self) -> None:
        self._ended = True
        self._event.set()

    def abort(self) -> None:
        self._chunks.clear()
        self._pending = 0
        self._ended = True
        self._event.set()
        if self._transport is not None:
            reset(self._transport)

    def buffered(self) -> int:
        transport = self._transport
        size = self._pending
        if transport is not None:
            size += transport.get_write_buffer_size()
        return size

    async def run(self, response: web.StreamResponse) -> None:
        """Write frames as they come until the session lets go of this receiver.

        The first frame goes out in a write (an HTTP chunk) of its own, as sockjs-node
        writes every frame and as the protocol's suite reads a stream: a new session's
        ``o`` is never glued to what follows it. Later frames queued together are
        written together.
        """
        first = True
        while True:
            await self._event.wait()
            self._event.clear()
            if first and self._chunks:
                first = False
                data = self._chunks.pop(0)
                self._pending -= len(data)
                await response.write(data)
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._pending = 0
                await response.write(data)
            if self._ended and not self._chunks:
                return


class WebSocketReceiver:
    """The SockJS WebSocket transport: every frame is one text message."""

    __slots__ = ("_ws", "_transport", "ended")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self._ws = ws
        self._transport = transport
        self.ended = False

    def send_frame(self, frame: str) -> bool:
        transport = self._transport
        if not self.ended and not transport.is_closing():
            write_message(transport, frame.encode("utf-8"), False)
        return False

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            wake(self._ws)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    def abort(self) -> None:
        self.ended = True
        reset(self._transport)
        wake(self._ws)


class RawSession:
    """The raw ``/websocket`` entry point: no framing, one WebSocket message per message."""

    __slots__ = (
        "id",
        "info",
        "state",
        "handler",
        "_ws",
        "_transport",
        "close_code",
        "close_reason",
        "_input",
    )

    def __init__(self, info: RequestInfo, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self.id = "raw"
        self.info = info
        self.state = State.OPEN
        self.handler: Handler | None = None
        self._ws = ws
        self._transport = transport
        self.close_code = 1000
        self.close_reason = ""
        self._input = ReadGate()

    def send(self, text: str) -> None:
        if self.state is State.OPEN and not self._transport.is_closing():
            write_message(self._transport, text.encode("utf-8", "surrogatepass"), False)

    def close(self, code: int, reason: str) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        # Application codes outside what a WebSocket close frame may carry become 1000.
        self.close_code = (
            code
            if code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1012) or 3000 <= code < 5000
            else 1000
        )
        self.close_reason = reason
        self._input.resume()
        wake(self._ws)

    def disable_heartbeat(self) -> None:
        pass

    def pause_reading(self) -> None:
        self._input.pause()

    def resume_reading(self) -> None:
        self._input.resume()

    def abort(self) -> None:
        self.close(1002, "Connection aborted")
        reset(self._transport)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()


class SockJSEndpoint:
    """SockJS under one base path; ``factory`` makes the application's handler of each session."""

    def __init__(self, prefix: str, factory: HandlerFactory, options: SockJSOptions | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.factory = factory
        self.options = options or SockJSOptions()
        self.sessions: dict[str, Session] = {}  # sessions of the HTTP transports
        self._busy: set[asyncio.Future[None]] = set()  # requests holding a receiver
        page = (_IFRAME_PAGE % self.options.client_url).encode("utf-8")
        self._iframe = page
        self._iframe_etag = '"' + hashlib.md5(page).hexdigest() + '"'
        allowed = self.options.allowed_origins
        self._origins = OriginPolicy(["*"] if allowed is None else allowed)
        # session id -> who opened it (_owner), for the sessions of the HTTP transports
        self._owners: dict[str, bytes] = {}
        self._receivers: dict[
            str, tuple[str, Callable[[web.Request, str], Awaitable[web.StreamResponse]]]
        ] = {
            "xhr": ("POST", self._xhr_polling),
            "xhr_streaming": ("POST", self._xhr_streaming),
            "eventsource": ("GET", self._eventsource),
            "htmlfile": ("GET", self._htmlfile),
            "jsonp": ("GET", self._jsonp),
            "xhr_send": ("POST", self._xhr_send),
            "jsonp_send": ("POST", self._jsonp_send),
            "websocket": ("GET", self._websocket),
        }

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", self.prefix or "/", self._dispatch)
        router.add_route("*", self.prefix + "/{tail:.*}", self._dispatch)

    @property
    def session_count(self) -> int:
        return len(self.sessions)

    async def drain(self, timeout: float) -> None:
        """Let requests that hold a receiver write their last frames (at shutdown)."""
        if self._busy:
            await asyncio.wait(list(self._busy), timeout=timeout)

    # ------------------------------------------------------------- dispatch

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request, request.match_info.get("tail") or "", request.method)
        except _Refused as refused:
            return refused.response

    async def _route(self, request: web.Request, tail: str, method: str) -> web.StreamResponse:
        if tail == "":
            self._only(method, "GET")
            return _plain(200, "Welcome to SockJS!\n")
        if tail == "info":
            if method == "OPTIONS":
                return self._options(request, "OPTIONS, GET")
            self._only(method, "GET")
            return self._info(request)
        if _IFRAME.fullmatch(tail):
            self._only(method, "GET")
            return self._iframe_page(request)
        if tail == "websocket":
            if not self.options.websocket:
                return _empty(404)
            self._only(method, "GET")
            return await self._raw_websocket(request)
        parts = tail.split("/")
        if len(parts) != 3 or not (_ID.fullmatch(parts[0]) and _ID.fullmatch(parts[1])):
            return _empty(404)
        route = self._receivers.get(parts[2])
        if route is None or (parts[2] == "websocket" and not self.options.websocket):
            return _empty(404)
        allowed, handler = route
        if method == "OPTIONS" and parts[2] != "websocket":
            return self._options(request, f"OPTIONS, {allowed}")
        self._only(method, allowed)
        return await handler(request, parts[1])

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            raise _Refused(_empty(405, {"Allow": allowed}))

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if not self._origins.allows(origin, request.headers.get("Host")):
            raise _Refused(_plain(403, f"origin {origin} is not allowed"))

    def _owner(self, request: web.Request) -> bytes:
        """Who a request speaks for: its credential (Authorization, the credential
        cookies) and the client's address. A session's id travels in URLs, so
        anyone who learns it could otherwise read and write that session."""
        parts = [request.remote or "", request.headers.get("Authorization", "")]
        parts += [request.cookies.get(name, "") for name in self.options.credential_cookies]
        return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).digest()

    def _check_owner(self, request: web.Request, session_id: str) -> None:
        """404 for a request about a session someone else opened, as Spring answers."""
        owner = self._owners.get(session_id)
        if owner is not None and not hmac.compare_digest(owner, self._owner(request)):
            raise _Refused(_empty(404))

    def _cors(self, request: web.Request, headers: dict[str, str]) -> dict[str, str]:
        """CORS as sockjs-node's ``xhr_cors``: the page's Origin echoed with credentials,
        ``null`` included (a browser takes ``*`` with credentials as a refusal);
        ``*`` without credentials for a request that names no origin. Which
        origins get this far is ``_check_origin``'s decision, made before."""
        origin = request.headers.get("Origin")
        if origin:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
        else:
            headers["Access-Control-Allow-Origin"] = "*"
        headers["Vary"] = "Origin"
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        return headers

    def _session_headers(self, request: web.Request, content_type: str) -> dict[str, str]:
        """CORS, no caching, and JSESSIONID when configured: every session transport's response."""
        headers = self._cors(request, {"Content-Type": content_type, "Cache-Control": NO_CACHE})
        if self.options.cookie_needed:
            value = request.cookies.get("JSESSIONID") or "dummy"
            headers["Set-Cookie"] = f"JSESSIONID={value}; Path=/"
        return headers

    # ------------------------------------------------------- static answers

    def _options(self, request: web.Request, methods: str) -> web.Response:
        self._check_origin(request)
        headers = self._cors(
            request,
            {
                "Cache-Control": f"public, max-age={ONE_YEAR}",
                "Expires": _date(ONE_YEAR),
                "Access-Control-Max-Age": str(ONE_YEAR),
                "Access-Control-Allow-Methods": methods,
            },
        )
        return _empty(204, headers)

    def _info(self, request: web.Request) -> web.Response:
        self._check_origin(request)
        websocket = "true" if self.options.websocket else "false"
        cookie_needed = "true" if self.options.cookie_needed else "false"
        body = (
            f'{{"websocket":{websocket},"cookie_needed":{cookie_needed},'
            f'"origins":["*:*"],"entropy":{secrets.randbits(32)}}}'
        )
        headers = self._cors(request, {"Cache-Control": NO_CACHE})
        return web.Response(text=body, content_type="application/json", charset="UTF-8", headers=headers)

    def _iframe_page(self, request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == self._iframe_etag:
            return _empty(304, {"ETag": self._iframe_etag})
        headers = {
            "Cache-Control": f"public, max-age={ONE_YEAR}",
            "Expires": _date(ONE_YEAR),
            "ETag": self._iframe_etag,
        }
        return web.Response(body=self._iframe, content_type="text/html", charset="UTF-8", headers=headers)

    # ------------------------------------------------------------ receivers

    def _info_of(self, request: web.Request, transport: str) -> RequestInfo:
        return RequestInfo(
            transport=transport,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
            remote=request.remote or "",
        )

    def _session_for(self, request: web.Request, session_id: str, transport: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            session = Session(
                session_id,
                self._info_of(request, transport),
                self.factory,
                asyncio.get_running_loop(),
                heartbeat_s=self.options.heartbeat_s,
                disconnect_delay_s=self.options.disconnect_delay_s,
                on_gone=self._gone,
            )
            self.sessions[session_id] = session
            self._owners[session_id] = self._owner(request)
        return session

    def _gone(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self._owners.pop(session.id, None)

    async def _receive(
        self,
        request: web.Request,
        session_id: str,
        transport: str,
        content_type: str,
        fmt: Callable[[str], bytes],
        streaming: bool,
        prelude: bytes = b"",
        extra_headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        self._check_origin(request)
        self._check_owner(request, session_id)
        headers = self._session_headers(request, content_type)
        if extra_headers:
            headers.update(extra_headers)
        response = web.StreamResponse(headers=headers)
        if request.version < HttpVersion11:
            # Neither length nor chunks on HTTP/1.0: only closing the connection ends the body.
            response.force_close()
        await response.prepare(request)
        if prelude:
            await response.write(prelude)
        limit = self.options.streaming_limit
        receiver = HttpReceiver(fmt, streaming, limit, request.transport)
        session = self._session_for(request, session_id, transport)
        busy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._busy.add(busy)
        try:
            session.attach(receiver)
            await receiver.run(response)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            session.receiver_lost(receiver)  # the client went away mid-request
            raise
        finally:
            self._busy.discard(busy)
            busy.set_result(None)
        return response

    async def _xhr_polling(self, request: web.Request, session_id: str) -> web.StreamResponse:
        return await self._receive(
            request, session_id, "xhr-polling", "application/javascript; charset=UTF-8", _line, False
        )

    async def _xhr_streaming(self, request: web.Request, session_id: str) -> web.StreamResponse:
        return await self._receive(
            request,
            session_id,
            "xhr-streaming",
            "application/javascript; charset=UTF-8",
            _line,
            True,
            b"h" * 2048 + b"\n",
        )

    async def _eventsource(self, request: web.Request, session_id: str) -> web.StreamResponse:
        return await self._receive(
            request, session_id, "eventsource", "text/event-stream", _event, True, b"\r\n"
        )

    async def _htmlfile(self, request: web.Request, session_id: str) -> web.StreamResponse:
        callback = self._callback(request)
        head = _HTMLFILE_HEAD % callback
        head += " " * max(0, 1024 - len(head) + 14) + "\r\n\r\n"
        return await self._receive(
            request, session_id, "htmlfile", "text/html; charset=UTF-8", _script, True, head.encode("utf-8")
        )

    async def _jsonp(self, request: web.Request, session_id: str) -> web.StreamResponse:
        callback = self._callback(request).encode("ascii")

        def fmt(frame: str) -> bytes:
            # The leading comment is the Rosetta Flash defence: a body that starts with the
            # callback's name could be made to read as a Flash file served by this origin.
            return b"/**/" + callback + b"(" + json_string(frame).encode("ascii") + b");\r\n"

        return await self._receive(
            request,
            session_id,
            "jsonp-polling",
            "application/javascript; charset=UTF-8",
            fmt,
            False,
            extra_headers={"X-Content-Type-Options": "nosniff"},
        )

    @staticmethod
    def _callback(request: web.Request) -> str:
        callback = request.query.get("c") or request.query.get("callback")
        if not callback:
            raise _Refused(_plain(500, '"callback" parameter required'))
        if not _CALLBACK.fullmatch(callback):
            raise _Refused(_plain(500, 'invalid "callback" parameter'))
        return callback

    # ---------------------------------------------------------------- sends

    async def _xhr_send(self, request: web.Request, session_id: str) -> web.StreamResponse:
        error = await self._accept_send(request, session_id, form=False)
        if error is not None:
            return error
        response = web.Response(
            status=204, headers=self._session_headers(request, "text/plain; charset=UTF-8")
        )
        response.body = None
        return response

    async def _jsonp_send(self, request: web.Request, session_id: str) -> web.StreamResponse:
        error = await self._accept_send(request, session_id, form=True)
        if error is not None:
            return error
        return web.Response(body=b"ok", headers=self._session_headers(request, "text/plain; charset=UTF-8"))

    async def _accept_send(self, request: web.Request, session_id: str, form: bool) -> web.Response | None:
        """Hand the client's messages to the session; the error response, if any."""
        self._check_origin(request)
        session = self.sessions.get(session_id)
        if session is None:
            return _empty(404)
        self._check_owner(request, session_id)
        text = (await self._body(request)).decode("utf-8", "replace")
        if form and request.content_type == "application/x-www-form-urlencoded":
            text = parse_qs(text, keep_blank_values=True).get("d", [""])[0]
        try:
            messages = decode_payload(text)
        except PayloadError as exc:
            return _plain(500, str(exc))
        for message in messages:
            await session.input_ready()  # the application may be over a limit: wait, in order
            if session.state is not State.OPEN:
                break
            session.on_message(message)
        # Answer once the application has caught up: the client sends its next
        # batch only after this answer, so a busy session slows its sender.
        await session.input_ready()
        return None

    async def _body(self, request: web.Request) -> bytes:
        """The request body up to ``max_message_size`` (not the application's client_max_size)."""
        limit = self.options.max_message_size
        too_big = _Refused(_plain(413, f"message larger than {limit} bytes"))
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.options.body_timeout_s):
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise too_big
                    chunks.append(chunk)
        except TimeoutError:
            slow = _plain(408, f"the request body did not arrive within {self.options.body_timeout_s:g} s")
            slow.force_close()
            raise _Refused(slow) from None
        return b"".join(chunks)

    # ------------------------------------------------------------ websocket

    def _check_upgrade(self, request: web.Request) -> None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise _Refused(_plain(400, 'Can "Upgrade" only to "WebSocket".'))
        tokens = [t.strip().lower() for t in request.headers.get("Connection", "").split(",")]
        if "upgrade" not in tokens:
            raise _Refused(_plain(400, '"Connection" must be "Upgrade".'))
        self._check_origin(request)

    async def _accept_websocket(
        self, request: web.Request
    ) -> tuple[web.WebSocketResponse, asyncio.Transport | None]:
        """The handshake; the transport is None if the client left during it."""
        self._check_upgrade(request)
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=self.options.max_message_size)
        await ws.prepare(request)
        return ws, request.transport

    async def _websocket(self, request: web.Request, session_id: str) -> web.StreamResponse:
        ws, transport = await self._accept_websocket(request)
        if transport is None:
            return ws
        receiver = WebSocketReceiver(ws, transport)
        # Not registered: a WebSocket session lives as long as its connection,
        # and two connections may use the same session id.
        session = Session(
            session_id,
            self._info_of(request, "websocket"),
            self.factory,
            asyncio.get_running_loop(),
            heartbeat_s=self.options.heartbeat_s,
            disconnect_delay_s=self.options.disconnect_delay_s,
        )
        busy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._busy.add(busy)
        try:
            session.attach(receiver)
            while not receiver.ended:
                await session.input_ready()
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    if not msg.data:
                        continue  # empty messages are ignored
                    try:
                        messages = decode_payload(msg.data, single_allowed=True)
                    except PayloadError:
                        log.info("sockjs session %s: broken JSON from the client; closing", session_id)
                        transport.close()  # the protocol says: terminate abruptly
                        break
                    for text in messages:
                        session.on_message(text)
                elif msg.type is WSMsgType.BINARY:
                    transport.close()  # SockJS carries text only
                    break
                else:
                    break  # closed by the client, or woken by our end()
            if not transport.is_closing():
                await ws.close(code=1000, message=b"")
        finally:
            session.receiver_lost(receiver)  # a no-op when the session let go first
            session.forget()
            self._busy.discard(busy)
            busy.set_result(None)
        return ws

    async def _raw_websocket(self, request: web.Request) -> web.StreamResponse:
        ws, transport = await self._accept_websocket(request)
        if transport is None:
            return ws
        raw = RawSession(self._info_of(request, "raw-websocket"), ws, transport)
        busy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._busy.add(busy)
        try:
            raw.handler = self.factory(Connection(raw))  # type: ignore[arg-type]
            while raw.state is State.OPEN:
                if not raw._input.is_open:
                    await raw._input.wait()
                    continue
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    raw.handler.on_message(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    raw.handler.on_message(msg.data.decode("utf-8", "replace"))
                else:
                    if msg.type is WSMsgType.ERROR and msg is not WAKE:
                        log.debug("sockjs raw websocket error: %s", ws.exception())
                    break
            await ws.close(code=raw.close_code, message=close_reason(raw.close_reason))
        finally:
            if raw.state is State.OPEN:
                raw.state = State.CLOSED
                if raw.handler is not None:
                    raw.handler.on_close()
            self._busy.discard(busy)
            busy.set_result(None)
        return ws


def _line(frame: str) -> bytes:
    return frame.encode("utf-8") + b"\n"


def _event(frame: str) -> bytes:
    return b"data: " + frame.encode("utf-8") + b"\r\n\r\n"


def _script(frame: str) -> bytes:
    return b"<script>\np(" + json_string(frame).encode("ascii") + b");\n</script>\r\n"
