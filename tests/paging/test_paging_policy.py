"""The pure paging policy: what each log entry pages, when approvers are nudged, when a run
cannot reach quorum. Tables of cases with an injected clock; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.events import EventKind
from bot.domain.follow_ups import (
    FollowUpAction,
    FollowUpItem,
    FollowUpView,
    blank_follow_ups,
    done_count,
    follow_up_refusal,
    parse_item,
)
from bot.domain.paging_policy import (
    PageAction,
    PageTrigger,
    Severity,
    WaitingFacts,
    approval_expired,
    approval_nudges,
    escalation_dedup_key,
    pages_for_event,
    paging_status,
    quorum_check,
    run_dedup_key,
)
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.views import RunView, StepView

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
ALL = ("start", "failure", "waiting", "quorum")


def run(status: RunStatus = RunStatus.ACTIVE, reason: str = "auth broke") -> RunView:
    steps = tuple(StepView(step=s, execution_id=None, attempt=0, status=None, plan=None)
                  for s in STEP_ORDER)
    return RunView(run_id="r1", status=status, initiator_id="U_A", initiator_name="alice",
                   reason=reason, created_at=T0, finished_at=None, steps=steps,
                   channel_id="C1", thread_ts="1700000000.000100")


@pytest.mark.parametrize(("kind", "step", "page_on", "trigger", "severity"), [
    (EventKind.RUN_STARTED, None, ALL, PageTrigger.START, Severity.WARNING),
    (EventKind.STEP_FAILED, "downgrade", ALL, PageTrigger.FAILURE, Severity.ERROR),
    (EventKind.STEP_INTERRUPTED, "restart", ALL, PageTrigger.FAILURE, Severity.ERROR),
    (EventKind.APPROVAL_OVERDUE, "backup", ALL, PageTrigger.WAITING, Severity.WARNING),
    (EventKind.QUORUM_UNREACHABLE, "backup", ALL, PageTrigger.QUORUM, Severity.ERROR),
    (EventKind.ESCALATED, None, (), PageTrigger.ESCALATION, Severity.CRITICAL),
])
def test_each_moment_pages_once_with_its_severity(
    kind: EventKind, step: str | None, page_on: tuple[str, ...], trigger: PageTrigger,
    severity: Severity,
) -> None:
    pages = pages_for_event(kind, step, {"summary": "boom", "why": "prod down"}, run(), page_on)
    assert len(pages) == 1
    page = pages[0]
    assert (page.action, page.trigger, page.severity) == (PageAction.TRIGGER, trigger, severity)
    assert page.link == "https://slack.com/archives/C1/p1700000000000100"
    assert page.custom_details["run_id"] == "r1"
    expected_key = escalation_dedup_key("r1") if kind is EventKind.ESCALATED \
        else run_dedup_key("r1")
    assert page.dedup_key == expected_key


@pytest.mark.parametrize(("kind", "left_out"), [
    (EventKind.RUN_STARTED, "start"), (EventKind.STEP_FAILED, "failure"),
    (EventKind.APPROVAL_OVERDUE, "waiting"), (EventKind.QUORUM_UNREACHABLE, "quorum"),
])
def test_page_on_leaves_a_moment_out(kind: EventKind, left_out: str) -> None:
    page_on = tuple(p for p in ALL if p != left_out)
    assert pages_for_event(kind, "backup", {}, run(), page_on) == []


def test_escalation_pages_even_when_page_on_is_empty() -> None:
    assert pages_for_event(EventKind.ESCALATED, None, {"why": "x"}, run(), ())


@pytest.mark.parametrize("kind", [EventKind.RUN_COMPLETED, EventKind.RUN_ABORTED,
                                  EventKind.STEP_REJECTED])
def test_the_end_resolves_only_alerts_that_were_opened(kind: EventKind) -> None:
    assert pages_for_event(kind, None, {}, run(RunStatus.COMPLETED), ALL) == []
    only_run = pages_for_event(kind, None, {}, run(RunStatus.COMPLETED), ALL,
                               triggered={run_dedup_key("r1")})
    assert [(p.action, p.dedup_key) for p in only_run] == [
        (PageAction.RESOLVE, run_dedup_key("r1"))]
    both = pages_for_event(kind, None, {}, run(RunStatus.COMPLETED), ALL,
                           triggered={run_dedup_key("r1"), escalation_dedup_key("r1")})
    assert {p.dedup_key for p in both} == {run_dedup_key("r1"), escalation_dedup_key("r1")}


def test_a_huge_reason_is_clipped_to_pagerdutys_limit() -> None:
    page = pages_for_event(EventKind.RUN_STARTED, None, {}, run(reason="x" * 5000), ALL)[0]
    assert len(page.summary) == 1024


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.mark.parametrize(("waited", "last_reminder_ago", "overdue_recorded", "remind", "overdue"), [
    (5, None, False, False, False),      # not long enough yet
    (15, None, False, True, False),      # first reminder at the threshold
    (20, 5, False, False, False),        # reminded 5 min ago: not again yet
    (31, 16, False, True, True),         # 15 min since the last, and past the page threshold
    (40, 1, True, False, False),         # paged already, reminded a minute ago
    (45, 15, True, True, False),         # reminders go on; the page went once
])
def test_reminders_at_most_every_n_minutes_and_one_page(
    waited: float, last_reminder_ago: float | None, overdue_recorded: bool, remind: bool,
    overdue: bool,
) -> None:
    now = T0 + minutes(waited)
    facts = WaitingFacts(now, T0, None if last_reminder_ago is None
                         else now - minutes(last_reminder_ago), overdue_recorded)
    nudges = approval_nudges(facts, minutes(15), minutes(30))
    assert (nudges.remind, nudges.overdue) == (remind, overdue)


def test_thresholds_can_be_turned_off() -> None:
    facts = WaitingFacts(T0 + minutes(600), T0, None, False)
    assert not approval_nudges(facts, None, None)


@pytest.mark.parametrize(("age", "expired"), [(59, False), (60, True), (61, True)])
def test_an_approval_expires_at_its_ttl(age: float, expired: bool) -> None:
    assert approval_expired(T0, T0 + minutes(age), minutes(60)) is expired


@pytest.mark.parametrize(("eligible", "fresh", "reachable", "left", "needed"), [
    ({"a", "b", "c"}, set(), True, 3, 2),
    ({"a"}, set(), False, 1, 2),                  # one engineer cannot make two approvals
    ({"a", "b"}, {"a"}, True, 1, 1),
    ({"a"}, {"a"}, False, 0, 1),                  # the other approver left the group
    ({"a", "b"}, {"x"}, True, 2, 2),              # an approver no longer eligible counts no more
])
def test_quorum_check(eligible: set[str], fresh: set[str], reachable: bool, left: int,
                      needed: int) -> None:
    check = quorum_check(frozenset(eligible), frozenset(fresh), 2)
    assert (check.reachable, check.eligible_left, check.still_needed) == (reachable, left, needed)


def test_paging_status_says_when_nobody_is_paged() -> None:
    assert "off" in paging_status(False, ALL, "https://events.pagerduty.com")
    on = paging_status(True, ("failure",), "https://events.pagerduty.com/")
    assert "https://events.pagerduty.com/v2/enqueue" in on and "failure" in on


def test_follow_ups_are_the_runbooks_five_and_count_done() -> None:
    items = blank_follow_ups()
    assert len(items) == 5 and done_count(items) == 0
    assert parse_item("1") is FollowUpItem.ROOT_CAUSE
    assert parse_item("auth_monitoring") is FollowUpItem.AUTH_MONITORING
    assert parse_item("6") is None and parse_item("nonsense") is None


@pytest.mark.parametrize(("action", "authorised", "finished", "current", "refused"), [
    (FollowUpAction.OWN, True, True, FollowUpView(FollowUpItem.ROOT_CAUSE), None),
    (FollowUpAction.OWN, False, True, FollowUpView(FollowUpItem.ROOT_CAUSE), "authorised"),
    (FollowUpAction.DONE, True, False, FollowUpView(FollowUpItem.ROOT_CAUSE), "ended"),
    (FollowUpAction.OWN, True, True,
     FollowUpView(FollowUpItem.ROOT_CAUSE, owner_id="U_B"), None),  # taken over
    (FollowUpAction.OWN, True, True,
     FollowUpView(FollowUpItem.ROOT_CAUSE, owner_id="U_A"), "already own"),
    (FollowUpAction.DONE, True, True,
     FollowUpView(FollowUpItem.ROOT_CAUSE, done_by_name="bob", done_at=T0), "already done"),
])
def test_who_may_own_or_close_an_item(
    action: FollowUpAction, authorised: bool, finished: bool, current: FollowUpView,
    refused: str | None,
) -> None:
    why = follow_up_refusal(action, authorised=authorised, run_finished=finished,
                            current=current, user_id="U_A")
    assert (why is None) if refused is None else (why is not None and refused in why)


def test_step_view_statuses_appear_in_the_details() -> None:
    view = run()
    steps = list(view.steps)
    steps[0] = StepView(step=StepName.BACKUP, execution_id="e", attempt=2,
                        status=StepStatus.FAILED, plan=None)
    view = RunView(**{**view.__dict__, "steps": tuple(steps)})
    page = pages_for_event(EventKind.STEP_FAILED, "backup", {"summary": "disk full"}, view, ALL)[0]
    assert page.custom_details["steps"]["1 backup"] == "failed (attempt 2)"
    assert "disk full" in page.summary
