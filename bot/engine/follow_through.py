"""Follow-through: the engine's subscriber that pages on-call and watches waiting steps, fed from
the incident log (never called from inside the engine's own transitions).

On every change notice, and every `FOLLOW_THROUGH_INTERVAL_SECONDS` (time passes without
changes: a step waits), it looks at the runs concerned:

1. the step waiting for approval (bot/engine/approval_watch.py): reminders, the overdue page,
   expired approvals, a quorum nobody can reach — written to the log; and a resend of step 5
   waiting for approval (of any run that may still resend, ended or not): the same reminders,
   overdue page (on an alert of its own, resolved when the resend finishes) and expiry;
2. the log entries that page (paging_policy.PAGE_WORTHY_KINDS) not yet delivered to PagerDuty:
   each is claimed, sent through the `Pager` with no transaction open, and recorded
   (bot/engine/delivery_claims.py); the outcome is itself an entry (`page_sent` or
   `page_failed`), which the thread shows. A page that fails after its retries is recorded and
   left: a paging outage never holds up a step.

With no pager (no routing key) step 2 does nothing; reminders and expiry still happen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import repo_deliveries, repo_events, repo_resends
from bot.db.repo_deliveries import Target
from bot.db.repo_follow_ups import latest_run
from bot.domain.events import EventKind, Source
from bot.domain.paging_policy import (
    PAGE_WORTHY_KINDS,
    PageAction,
    Pager,
    PageRequest,
    PageResult,
    pages_for_event,
)
from bot.engine.approval_watch import ApproverSource, watch_waiting_resend, watch_waiting_step
from bot.engine.delivery_claims import Claimed, DeliveryClaims
from bot.engine.run_watcher import RunWatcher
from bot.engine.view_builder import build_run_view

if TYPE_CHECKING:
    from bot.engine.engine import Engine

log = logging.getLogger(__name__)


class FollowThrough(RunWatcher):
    def __init__(
        self, engine: Engine, pager: Pager | None, approvers: ApproverSource | None = None,
        interval: float | None = None,
    ) -> None:
        super().__init__(engine, interval or engine.settings.follow_through_interval_seconds)
        self.engine = engine
        self.pager = pager
        self.approvers = approvers
        self._first = True
        self.claims = DeliveryClaims(engine.sessions, engine.replica_id,
                                     engine.settings.step_lease_seconds)

    async def pass_over(self, runs: set[str]) -> None:
        await self.pass_once(runs, include_latest=self._first)
        self._first = False

    async def pass_once(self, runs: Iterable[str] = (), include_latest: bool = False) -> None:
        """Look at these runs, the active one, those with a resend waiting for approval (and
        the latest, e.g. after a restart, when its closing resolve may still be owed)."""
        targets = set(runs)
        active = await self.engine.active_run_id()
        if active is not None:
            targets.add(active)
        if include_latest:
            async with self.engine.sessions() as session:
                run = await latest_run(session, self.engine.target)
            if run is not None:
                targets.add(str(run.id))
        async with self.engine.sessions() as session:
            targets |= await repo_resends.runs_with_resend_waiting(session, self.engine.target)
        for run_id in sorted(targets):
            await watch_waiting_step(self.engine, run_id, self.approvers)
            await watch_waiting_resend(self.engine, run_id, self.approvers)
            await self.deliver_pages(run_id)

    async def deliver_pages(self, run_id: str) -> int:
        """Send what the log says should page and has not; returns how many pages went out."""
        if self.pager is None:
            return 0
        async with self.engine.sessions() as session:
            waiting = await repo_deliveries.pending(session, run_id, Target.PAGERDUTY,
                                                    PAGE_WORTHY_KINDS)
        sent = 0
        for event in waiting:
            sent += await self._deliver(run_id, event.id, EventKind(event.kind), event.step,
                                        dict(event.data))
        return sent

    async def _deliver(self, run_id: str, event_id: int, kind: EventKind, step: str | None,
                       data: dict[str, object]) -> int:
        """Claim, page with no transaction open, record (bot/engine/delivery_claims.py)."""
        assert self.pager is not None
        async with self.claims.held(event_id, Target.PAGERDUTY) as claimed:
            if claimed is None:
                return 0  # another replica is on it, or it is done
            async with self.engine.sessions() as session:
                view = await build_run_view(session, run_id)
                triggered = await triggered_keys(session, run_id)
                logged = await logged_outcomes(session, run_id, event_id) \
                    if claimed.retaken else set()
            requests = pages_for_event(kind, step, data, view, self.engine.settings.page_on,
                                       triggered)
            outcomes = []
            for request in requests:
                if (request.action.value, request.dedup_key) in logged:
                    outcomes.append(True)  # sent and logged under the claim that lapsed
                    continue
                result = await self.pager.send(request)  # a resent trigger: same dedup_key
                outcomes.append(result.accepted)
                await self._log_outcome(claimed, run_id, kind, step, request, result)
            await self.claims.record(claimed, run_id,
                                     {"pages": len(requests), "accepted": outcomes})
        if requests:
            self.engine.changed(run_id)
        return len(requests)

    async def _log_outcome(self, claimed: Claimed, run_id: str, kind: EventKind,
                           step: str | None, request: PageRequest, result: PageResult) -> None:
        """Its own short transaction: the outcome is in the log at once, in order — unless
        the claim lapsed meanwhile and its new holder logs it."""
        async with self.engine.sessions() as session, session.begin():
            if not await self.claims.still_mine(session, claimed):
                log.warning("page for %s of run %s sent after its claim lapsed; its new holder "
                            "logs it", kind.value, run_id)
                return
            await repo_events.append_event(
                session, run_id, "bot", Source.BOT,
                EventKind.PAGE_SENT if result.accepted else EventKind.PAGE_FAILED, step,
                {"for_event": claimed.event_id, "for_kind": kind.value,
                 "action": request.action.value, "trigger": request.trigger.value,
                 "dedup_key": result.dedup_key or request.dedup_key,
                 "severity": request.severity.value if request.action is
                 PageAction.TRIGGER else None,
                 "summary": request.summary, "attempts": result.attempts,
                 "status": result.status, "error": result.error},
            )
        if not result.accepted:
            log.warning("page for %s of run %s failed: %s", kind.value, run_id, result.error)


async def logged_outcomes(session: AsyncSession, run_id: str, event_id: int
                          ) -> set[tuple[str, str]]:
    """(action, dedup_key) of the pages already logged for this entry."""
    return {(str(e.data.get("action")), str(e.data.get("dedup_key"))) for e in
            await repo_deliveries.events_of(session, run_id,
                                            (EventKind.PAGE_SENT, EventKind.PAGE_FAILED))
            if e.data.get("for_event") == event_id}


async def triggered_keys(session: AsyncSession, run_id: str) -> set[str]:
    """Dedup keys a trigger was accepted for in this run (only those are resolved)."""
    return {str(e.data.get("dedup_key")) for e in
            await repo_deliveries.events_of(session, run_id, (EventKind.PAGE_SENT,))
            if e.data.get("action") == PageAction.TRIGGER.value}
