"""The fixture every module here uses; the rest of the harness is in harness.py."""

from __future__ import annotations

import pytest

from .harness import Env, make_env


@pytest.fixture
def env() -> Env:
    """A broker with default settings and dev-mode login, on a manual clock."""
    return make_env()
