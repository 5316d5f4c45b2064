"""PagerDuty, simulated at the wire: a fake Events API v2 on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.pagerwire.fake_events_api import FakeEventsApi, start_fake_events_api

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, as PagerDuty's are


@pytest.fixture
async def fake_pagerduty() -> AsyncIterator[FakeEventsApi]:
    fake, runner = await start_fake_events_api()
    try:
        yield fake
    finally:
        await runner.cleanup()
