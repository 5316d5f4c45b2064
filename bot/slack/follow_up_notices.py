"""The follow-through's messages in the thread, read from the incident log.

A small explicit hook beside the mirror (bot/slack/mirror.py), not inside it: the mirror draws
the board and the step messages; this posts the one-off notices (reminders that mention the
approvers, expired approvals, an unreachable quorum, an escalation that mentions its group,
pages sent or failed) and the post-rollback checklist, and keeps that checklist up to date. It
spends the mirror's write budget, so the channel still sees at most about one write a second.

Each entry is delivered once: it is claimed (a `delivery_claims` row with an expiry, committed),
posted with no transaction open, then recorded in `event_deliveries` (target `slack`), so a storm
of 429s longer than the lease neither kills a transaction nor lets another replica post it too.
Every notice carries its entry as message metadata (`rollback_notice {run, event}`); a claim that
lapsed unrecorded is examined by reading the thread for that metadata before posting again. The
checklist is posted once the mirror has delivered the run's closing summary (it follows it in
the thread), and is redrawn whenever an item is owned or closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.db import repo_deliveries, repo_events
from bot.db.models import IncidentEvent
from bot.db.repo_deliveries import Target
from bot.domain.events import EventKind, Source
from bot.domain.paging_policy import CLOSING_KINDS
from bot.engine.delivery_claims import DeliveryClaims
from bot.engine.engine import Engine
from bot.engine.run_watcher import RunWatcher
from bot.slack.follow_up_blocks import checklist, notice
from bot.slack.mirror import WriteBudget
from bot.slack.thread_writer import thread_messages

log = logging.getLogger(__name__)

NOTICE_KINDS = frozenset({EventKind.APPROVAL_REMINDED, EventKind.APPROVAL_EXPIRED,
                          EventKind.QUORUM_UNREACHABLE, EventKind.ESCALATED,
                          EventKind.PAGE_SENT, EventKind.PAGE_FAILED})
CHECKLIST_CHANGES = frozenset({EventKind.FOLLOW_UP_OWNED, EventKind.FOLLOW_UP_DONE})
RETRY_SECONDS = 2.0
NOTICE_METADATA_EVENT = "rollback_notice"


def notice_metadata(run_id: str, event_id: int) -> dict[str, object]:
    """Which log entry a thread message shows: found again after a lost answer."""
    return {"event_type": NOTICE_METADATA_EVENT,
            "event_payload": {"run": run_id, "event": event_id}}


def notice_of(message: dict[str, Any]) -> tuple[str, int] | None:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    if metadata.get("event_type") != NOTICE_METADATA_EVENT or "event" not in payload:
        return None
    return str(payload.get("run")), int(payload["event"])


class ThreadNotices(RunWatcher):
    def __init__(self, engine: Engine, client: AsyncWebClient, budget: WriteBudget) -> None:
        super().__init__(engine, RETRY_SECONDS)
        self.engine = engine
        self.client = client
        self.budget = budget
        self.claims = DeliveryClaims(engine.sessions, engine.replica_id,
                                     engine.settings.step_lease_seconds)

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
        """Claim, post with no transaction open, record (bot/engine/delivery_claims.py)."""
        async with self.claims.held(event.id, Target.SLACK) as claimed:
            if claimed is None:
                return
            found = await self._posted_already(channel, thread_ts, run_id, event.id) \
                if claimed.retaken else None
            detail = await self._post(run_id, event, channel, thread_ts, found)
            await self.claims.record(claimed, run_id, detail)

    async def _post(self, run_id: str, event: IncidentEvent, channel: str, thread_ts: str,
                    found: str | None) -> dict[str, object]:
        """The entry's message (`found`: the ts of its copy already in the thread, posted
        under a claim that lapsed); its detail for the delivery record."""
        kind = EventKind(event.kind)
        view = await self.engine.run_view(run_id)
        if kind in CHECKLIST_CHANGES:  # a redraw: doing it twice shows the same
            ts = await self._checklist_posted(run_id)
            assert ts is not None
            text, blocks = checklist(view)
            await self.budget.take(channel)
            await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
            return {}
        if kind in CLOSING_KINDS:
            drawn: tuple[str, list[dict[str, object]]] | None = checklist(view)
        else:
            data = dict(event.data)
            if kind is EventKind.ESCALATED and event.source == Source.SLACK.value:
                data["escalating_user_id"] = event.actor
            drawn = notice(kind, event.step, data, view)
        if drawn is None:
            return {}
        if found is not None:
            log.info("notice for entry %d of run %s is in the thread already (%s)", event.id,
                     run_id, found)
            return {"ts": found}
        await self.budget.take(channel)
        answer = await self.client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=drawn[0], blocks=drawn[1],
            metadata=notice_metadata(run_id, event.id))
        return {"ts": answer["ts"]}

    async def _posted_already(self, channel: str, thread_ts: str, run_id: str,
                              event_id: int) -> str | None:
        """The ts of this entry's notice if the thread holds it (read by its metadata)."""
        async for message in thread_messages(self.client, channel, thread_ts):
            if notice_of(message) == (run_id, event_id):
                return str(message["ts"])
        return None

    async def drain(self) -> None:
        """Deliver until nothing is pending (tests, shutdown); callers bound it."""
        while self._dirty:
            for run_id in list(self._dirty):
                self._dirty.discard(run_id)
                if not await self.sync(run_id):
                    self._dirty.add(run_id)
                    await asyncio.sleep(0.05)
