"""What an operator sets per SockJS endpoint, with the defaults: written once, here.

``config.py`` subclasses :class:`SockJSSettings` for ``server.sockjs[]`` (adding
the path and validation); the endpoint's :class:`~.endpoint.SockJSOptions` adds
what the node derives from the rest of its config.
"""

from __future__ import annotations

from dataclasses import dataclass

# sockjs-client 1.x from a CDN, as Spring's default (SockJsServiceRegistration.setClientLibraryUrl).
DEFAULT_CLIENT_URL = "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js"


@dataclass
class SockJSSettings:
    """What an operator sets per endpoint (``server.sockjs[]`` in the config, which adds validation)."""

    websocket: bool = True
    # Set the JSESSIONID cookie, for load balancers whose stickiness needs it.
    cookie_needed: bool = False
    # SockJS 'h' frames; STOMP sessions turn them off once STOMP heart-beats are negotiated.
    heartbeat_s: float = 25.0
    # A session with no receiving request for this long is over.
    disconnect_delay_s: float = 5.0
    # Bytes after which a streaming response ends and the client opens a new one,
    # so the browser can free what the old one buffered.
    streaming_limit: int = 128 * 1024
    # sockjs-client loaded by the iframe page of the iframe-based transports.
    client_url: str = DEFAULT_CLIENT_URL
    # Page origins allowed to use the endpoint (stompgate/origins.py): exact
    # (https://app.example.com), patterns (https://*.example.com), "null", "*".
    # None: any on a bare SockJS endpoint; a stompgate node puts server.allowed_origins
    # there (same origin only by default).
    allowed_origins: list[str] | None = None
