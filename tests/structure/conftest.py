"""The walk is measured as a user runs the app server: logging at INFO (the suite's pytest config says DEBUG,
under which the log itself is one more room for every frame)."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def production_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appserver")
