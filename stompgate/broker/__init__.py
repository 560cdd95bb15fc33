"""Sans-I/O broker core: sessions, destinations, subscriptions, identity, routing."""

from .auth import (
    Authenticator,
    AuthError,
    Credentials,
    DevAuthenticator,
    JwtAuthenticator,
    StaticAuthenticator,
)
from .broker import Broker, BrokerSettings, BrokerStats
from .destinations import DestinationError, DestinationRules, encode_user
from .message import Message
from .ports import Outbound, Scheduler
from .session import Session
from .settings import SessionLimits

__all__ = [
    "AuthError",
    "Authenticator",
    "Broker",
    "BrokerSettings",
    "BrokerStats",
    "Credentials",
    "DestinationError",
    "DestinationRules",
    "DevAuthenticator",
    "JwtAuthenticator",
    "Message",
    "Outbound",
    "Scheduler",
    "Session",
    "SessionLimits",
    "StaticAuthenticator",
    "encode_user",
]
