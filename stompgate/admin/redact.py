"""The effective configuration as the admin API shows it: every secret value replaced.

Secrets are found by the key that holds them, not by a list of today's keys
only: any key named like a credential (``password``, ``secret``, ``key``,
``token``...), every value of ``auth.users`` (passwords), and the password in
any URL (``redis://:pw@host``). A new secret key named otherwise must be added
to :data:`SECRET_PATHS`; tests/node/test_admin.py fails if a secret shows.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..config import Config

REDACTED = "<redacted>"
_SECRET_NAME = re.compile(r"(^|_)(password|passcode|secret|key|token|credentials?)$", re.IGNORECASE)
# Keys whose every value is a secret, or that are secret whatever their name.
SECRET_PATHS = {"auth.users", "api.key", "admin.password", "proxy.secret", "auth.jwt.secret"}
# Keys named like a secret that are not one.
PUBLIC_PATHS = {"admin.api_key", "auth.jwt.public_key", "auth.jwt.public_key_file"}
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^/@:]*:)([^/@]*)(@)", re.IGNORECASE)


def redacted_config(config: Config) -> dict[str, Any]:
    data: dict[str, Any] = _redact(dataclasses.asdict(config), "")
    return data


def _redact(value: Any, path: str) -> Any:
    name = path.rpartition(".")[2]
    if path in SECRET_PATHS or (path not in PUBLIC_PATHS and _SECRET_NAME.search(name)):
        if isinstance(value, dict):
            return {k: REDACTED for k in value}
        return REDACTED if value not in (None, "", False, True) else value
    if isinstance(value, dict):
        return {k: _redact(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, path) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), value)
    return value
