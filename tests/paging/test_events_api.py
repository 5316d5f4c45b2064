"""The PagerDuty adapter against the fake Events API: the documented wire format, the 202 answer,
back-off on 429/5xx, no retry on 400, and failure as a result (never an exception)."""

from __future__ import annotations

import pytest

from bot.domain.paging_policy import PageAction, PageRequest, PageTrigger, Severity
from bot.paging.events_api import PagerDutyEvents, pager_from_settings
from bot.settings import Settings
from tests.pagerwire.fake_events_api import FakeEventsApi
from tests.pagerwire.fixtures import ROUTING_KEY


class Sleeps:
    """Records the back-off instead of waiting it out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def trigger(summary: str = "Phase 3 rollback started", key: str = "rollback-r1") -> PageRequest:
    return PageRequest(PageAction.TRIGGER, key, PageTrigger.START, summary, Severity.WARNING,
                       {"run_id": "r1"}, "https://slack.com/archives/C1/p1700000000000100")


async def test_a_trigger_then_a_resolve_open_and_close_one_alert(
    fake_pagerduty: FakeEventsApi,
) -> None:
    pager = PagerDutyEvents(ROUTING_KEY, fake_pagerduty.url)
    try:
        opened = await pager.send(trigger())
        assert (opened.accepted, opened.status, opened.dedup_key) == (True, 202, "rollback-r1")
        event = fake_pagerduty.events[0]
        assert event["event_action"] == "trigger"
        assert event["payload"]["severity"] == "warning"
        assert event["payload"]["source"] == "rollback-bot"
        assert event["payload"]["custom_details"] == {"run_id": "r1"}
        assert event["links"] == [{"href": "https://slack.com/archives/C1/p1700000000000100",
                                   "text": "Incident thread in Slack"}]
        assert fake_pagerduty.open_alert("rollback-r1") is not None
        closed = await pager.send(PageRequest(PageAction.RESOLVE, "rollback-r1",
                                              PageTrigger.RESOLVE))
        assert closed.accepted
        assert set(fake_pagerduty.events[1]) == {"routing_key", "event_action", "dedup_key"}
        assert fake_pagerduty.alerts_for("rollback-r1")[0].status == "resolved"
    finally:
        await pager.close()


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_429_and_5xx_are_retried_with_a_growing_back_off(
    fake_pagerduty: FakeEventsApi, status: int,
) -> None:
    sleeps = Sleeps()
    pager = PagerDutyEvents(ROUTING_KEY, fake_pagerduty.url, backoff_seconds=2, sleep=sleeps)
    fake_pagerduty.fail_next(status, times=2)
    try:
        result = await pager.send(trigger())
    finally:
        await pager.close()
    assert result.accepted and result.attempts == 3
    assert sleeps.delays == [2, 4]
    assert len(fake_pagerduty.events) == 1


async def test_retry_after_is_honoured(fake_pagerduty: FakeEventsApi) -> None:
    sleeps = Sleeps()
    pager = PagerDutyEvents(ROUTING_KEY, fake_pagerduty.url, sleep=sleeps)
    fake_pagerduty.fail_next(429, times=1, retry_after=7)
    try:
        assert (await pager.send(trigger())).accepted
    finally:
        await pager.close()
    assert sleeps.delays == [7]


async def test_an_outage_is_a_failed_result_after_the_last_attempt(
    fake_pagerduty: FakeEventsApi,
) -> None:
    sleeps = Sleeps()
    pager = PagerDutyEvents(ROUTING_KEY, fake_pagerduty.url, max_attempts=4, sleep=sleeps)
    fake_pagerduty.outage(503)
    try:
        result = await pager.send(trigger())
    finally:
        await pager.close()
    assert not result.accepted and result.attempts == 4 and result.status == 503
    assert "503" in (result.error or "")
    assert fake_pagerduty.events == []


async def test_nobody_listening_is_a_failed_result(fake_pagerduty: FakeEventsApi) -> None:
    pager = PagerDutyEvents(ROUTING_KEY, "http://127.0.0.1:9", max_attempts=2, sleep=Sleeps())
    try:
        result = await pager.send(trigger())
    finally:
        await pager.close()
    assert not result.accepted and result.status is None
    assert "unreachable" in (result.error or "")


async def test_a_bad_routing_key_is_refused_once_and_not_retried(
    fake_pagerduty: FakeEventsApi,
) -> None:
    sleeps = Sleeps()
    pager = PagerDutyEvents("too-short", fake_pagerduty.url, sleep=sleeps)
    try:
        result = await pager.send(trigger())
    finally:
        await pager.close()
    assert not result.accepted and result.status == 400 and result.attempts == 1
    assert "32 characters" in (result.error or "")
    assert sleeps.delays == [] and len(fake_pagerduty.requests) == 1
    assert "too-short" not in (result.error or "")


@pytest.mark.parametrize(("body", "problem"), [
    ({"event_action": "trigger", "payload": {"summary": "s", "source": "x",
                                             "severity": "error"}}, "routing_key"),
    ({"routing_key": ROUTING_KEY, "event_action": "trigger",
      "payload": {"summary": "s", "source": "x", "severity": "sev1"}}, "severity"),
    ({"routing_key": ROUTING_KEY, "event_action": "trigger",
      "payload": {"summary": "s" * 1025, "source": "x", "severity": "info"}}, "1024"),
    ({"routing_key": ROUTING_KEY, "event_action": "trigger",
      "payload": {"source": "x", "severity": "info"}}, "summary"),
    ({"routing_key": ROUTING_KEY, "event_action": "resolve"}, "dedup_key"),
    ({"routing_key": ROUTING_KEY, "event_action": "escalate", "dedup_key": "k"}, "event_action"),
    ({"routing_key": ROUTING_KEY, "event_action": "trigger", "links": [{"text": "no href"}],
      "payload": {"summary": "s", "source": "x", "severity": "info"}}, "href"),
])
async def test_the_fake_refuses_what_pagerduty_documents_as_invalid(
    fake_pagerduty: FakeEventsApi, body: dict[str, object], problem: str,
) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http, \
            http.post(fake_pagerduty.url + "/v2/enqueue", json=body) as answer:
        assert answer.status == 400
        payload = await answer.json()
    assert payload["status"] == "invalid event"
    assert any(problem in error for error in payload["errors"]), payload
    assert fake_pagerduty.events == []


def test_no_routing_key_means_paging_off() -> None:
    settings = Settings(_env_file=None, pagerduty_routing_key="")  # type: ignore[call-arg]
    assert pager_from_settings(settings) is None
    on = Settings(_env_file=None, pagerduty_routing_key=ROUTING_KEY)  # type: ignore[call-arg]
    pager = pager_from_settings(on)
    assert pager is not None and ROUTING_KEY not in repr(pager)


def test_page_on_refuses_an_unknown_moment() -> None:
    from bot.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="PAGE_ON"):
        load_settings(_env_file=None, page_on="start,lunch")
