"""A SockJS server on aiohttp (protocol 0.3.3, as sockjs-client 1.x speaks it).

Reusable on its own: it carries strings and knows nothing of STOMP. Mount an
endpoint and give it a factory of handlers::

    endpoint = SockJSEndpoint("/echo", lambda conn: Echo(conn), SockJSOptions())
    endpoint.add_routes(app.router)
"""

from .endpoint import SockJSEndpoint, SockJSOptions
from .session import Connection, Handler, RequestInfo

__all__ = ["Connection", "Handler", "RequestInfo", "SockJSEndpoint", "SockJSOptions"]
