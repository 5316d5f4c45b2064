"""The follow-through's messages in the thread, read from the incident log.

A small explicit hook beside the mirror (bot/slack/mirror.py), not inside it: the mirror draws
the board and the step messages; this posts the one-off notices (reminders that mention the
approvers, expired approvals, an unreachable quorum, an escalation that mentions its group,
pages sent or failed) and the post-rollback checklist, and keeps that checklist up to date. It
spends the mirror's write budget, so the channel still sees at most about one write a second.

Each entry is delivered at least once: an `event_deliveries` row (target `slack`) is written in
the transaction that posts it, under an advisory lock, so replicas do not post it twice. The
checklist is posted once the mirror has delivered the run's closing summary (it follows it in
the thread), and is redrawn whenever an item is owned or closed.
"""

from __future__ import annotations

import asyncio
import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.db import repo_deliveries, repo_events
from bot.db.models import IncidentEvent
from bot.db.repo_deliveries import Target
from bot.domain.events import EventKind, Source
from bot.domain.paging_policy import CLOSING_KINDS
from bot.engine.engine import Engine
from bot.engine.run_watcher import RunWatcher
from bot.slack.follow_up_blocks import checklist, notice
from bot.slack.mirror import WriteBudget

log = logging.getLogger(__name__)

NOTICE_KINDS = frozenset({EventKind.APPROVAL_REMINDED, EventKind.APPROVAL_EXPIRED,
                          EventKind.QUORUM_UNREACHABLE, EventKind.ESCALATED,
                          EventKind.PAGE_SENT, EventKind.PAGE_FAILED})
CHECKLIST_CHANGES = frozenset({EventKind.FOLLOW_UP_OWNED, EventKind.FOLLOW_UP_DONE})
RETRY_SECONDS = 2.0


class ThreadNotices(RunWatcher):
    def __init__(self, engine: Engine, client: AsyncWebClient, budget: WriteBudget) -> None:
        super().__init__(engine, RETRY_SECONDS)
        self.engine = engine
        self.client = client
        self.budget = budget

    async def pass_over(self, runs: set[str]) -> None:
        for run_id in runs:
            try:
                if not await self.sync(run_id):
                    self.again(run_id)  # waits for the thread or the summary
            except (TimeoutError, SlackApiError, OSError) as exc:
                log.warning("Slack is not taking follow-through notices (%s); retrying", exc)
                self.again(run_id)
            except Exception:
                log.exception("could not post follow-through notices of run %s", run_id)
                self.again(run_id)

    async def sync(self, run_id: str) -> bool:
        """Post what is owed; True when nothing is left waiting."""
        view = await self.engine.run_view(run_id)
        if not view.thread_ts or not view.channel_id:
            return False  # the mirror has not posted the root yet
        async with self.engine.sessions() as session:
            waiting = await repo_deliveries.pending(
                session, run_id, Target.SLACK, NOTICE_KINDS | CLOSING_KINDS | CHECKLIST_CHANGES)
            summarised_up_to = await repo_events.outbox_cursor(session, run_id)
        settled = True
        for event in waiting:
            kind = EventKind(event.kind)
            if kind in CLOSING_KINDS and event.id > summarised_up_to:
                settled = False  # the checklist follows the summary
                break
            if kind in CHECKLIST_CHANGES and not await self._checklist_posted(run_id):
                settled = False
                break
            await self._deliver(run_id, event, view.channel_id, view.thread_ts)
        return settled

    async def _checklist_posted(self, run_id: str) -> str | None:
        async with self.engine.sessions() as session:
            closing = await repo_deliveries.events_of(session, run_id, CLOSING_KINDS)
            for event in closing:
                detail = await repo_deliveries.detail_of(session, event.id, Target.SLACK)
                if detail and detail.get("ts"):
                    return str(detail["ts"])
        return None

    async def _deliver(self, run_id: str, event: IncidentEvent, channel: str,
                       thread_ts: str) -> None:
        kind = EventKind(event.kind)
        async with self.engine.sessions() as session, session.begin():
            if not await repo_deliveries.claim(session, event.id, Target.SLACK):
                return
            view = await self.engine.run_view(run_id)
            detail: dict[str, object] = {}
            if kind in CLOSING_KINDS:
                text, blocks = checklist(view)
                await self.budget.take(channel)
                answer = await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts,
                                                            text=text, blocks=blocks)
                detail = {"ts": answer["ts"]}
            elif kind in CHECKLIST_CHANGES:
                ts = await self._checklist_posted(run_id)
                assert ts is not None
                text, blocks = checklist(view)
                await self.budget.take(channel)
                await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
            else:
                data = dict(event.data)
                if kind is EventKind.ESCALATED and event.source == Source.SLACK.value:
                    data["escalating_user_id"] = event.actor
                drawn = notice(kind, event.step, data, view)
                if drawn is not None:
                    await self.budget.take(channel)
                    answer = await self.client.chat_postMessage(
                        channel=channel, thread_ts=thread_ts, text=drawn[0], blocks=drawn[1])
                    detail = {"ts": answer["ts"]}
            await repo_deliveries.record(session, event.id, run_id, Target.SLACK, detail)

    async def drain(self) -> None:
        """Deliver until nothing is pending (tests, shutdown); callers bound it."""
        while self._dirty:
            for run_id in list(self._dirty):
                self._dirty.discard(run_id)
                if not await self.sync(run_id):
                    self._dirty.add(run_id)
                    await asyncio.sleep(0.05)
