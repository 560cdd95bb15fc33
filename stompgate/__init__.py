"""stompgate: a horizontally scalable STOMP-over-WebSocket broker."""

__version__ = "0.1.0"
