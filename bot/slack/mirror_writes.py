"""The mirror's writes to Slack, each happening once in the thread.

A post first consults what the thread is known to hold (`ThreadContents`); that knowledge is
dropped whenever a post of the run fails or goes unanswered and when a replica takes a run
over, and then the thread is read again before the next post, so a post Slack applied but
never answered is adopted, not repeated.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.charts.timeline_png import render_png
from bot.db import repo_events, repo_runs
from bot.domain.timeline import timeline_markdown
from bot.domain.timeline_chart import chart_layout
from bot.domain.views import RunView
from bot.slack import blocks
from bot.slack.slack_errors import Failure, classify, error_code
from bot.slack.thread_schedule import NextWrite, PendingEntry
from bot.slack.thread_writer import Identity, ThreadContents, ThreadReader

log = logging.getLogger(__name__)


class ThreadWrites:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], client: AsyncWebClient,
                 budget: Any) -> None:
        self.sessions = sessions
        self.client = client
        self.budget = budget
        self.reader = ThreadReader(client)
        self.known: dict[str, ThreadContents] = {}  # run id -> what its thread holds

    def forget(self, run_id: str) -> None:
        """Read the thread again before the next post of this run."""
        self.known.pop(run_id, None)

    async def _contents(self, view: RunView, channel: str) -> ThreadContents:
        contents = self.known.get(view.run_id)
        if contents is None:
            try:
                if view.thread_ts:
                    contents = await self.reader.thread(channel, view.thread_ts)
                else:
                    contents = await self.reader.channel_roots(channel)
            except SlackApiError as exc:
                if classify(exc) is Failure.TRANSIENT:
                    raise  # retried within the write's budget, like the write itself
                # A read Slack refuses for good (a workspace that denies bot tokens the
                # thread's history, a scope not granted) must not stop a rollback: post, at
                # the risk of a duplicate message, rather than leave the thread silent.
                log.warning("cannot read the thread of run %s (%s): posting without "
                            "looking for an earlier copy", view.run_id, error_code(exc))
                contents = ThreadContents()
            self.known[view.run_id] = contents
        return contents

    async def _post(self, view: RunView, channel: str, identity: Identity,
                    thread_ts: str | None, text: str,
                    message_blocks: list[dict[str, Any]] | None) -> tuple[str, str, bool]:
        """The message's (channel, ts, posted now): the one the thread already holds (what it
        shows is unknown: it is redrawn), or a new post."""
        contents = await self._contents(view, channel)
        found = contents.messages.get(identity)
        if found is not None:
            log.info("adopting %s already in the thread (%s)", identity, found)
            return channel, found, False
        await self.budget.take(channel)
        answer = await self.client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=text, blocks=message_blocks,
            metadata=identity.metadata())
        contents.messages[identity] = str(answer["ts"])
        return str(answer["channel"]), str(answer["ts"]), True

    async def post_root(self, view: RunView, channel: str, write: NextWrite,
                        plain: bool = False) -> bool:
        """True if posted now with `write`'s drawing; False if adopted, or if another
        replica posted it meanwhile. Slack is called with no transaction open: a slow or
        rate-limited post holds no lock on the run (clicks go on) and outlives no database
        timeout; the post is recorded after, unless another replica's was recorded first."""
        assert write.message is not None
        async with self.sessions() as session:
            run = await repo_runs.get_run(session, view.run_id)
        if run is not None and run.thread_ts:
            return False
        identity = Identity(view.run_id, "board")
        posted_channel, ts, posted = await self._post(
            view, channel, identity, None, write.message.text,
            None if plain else write.message.blocks)
        async with self.sessions() as session, session.begin():
            recorded = await repo_runs.record_run_thread(session, view.run_id, posted_channel,
                                                         ts)
        if recorded not in (None, ts):
            await self._withdraw(view.run_id, posted_channel, ts, identity)
            return False
        self.known[view.run_id] = ThreadContents({identity: ts})
        return posted

    async def post_step(self, view: RunView, channel: str, write: NextWrite,
                        plain: bool = False) -> bool:
        """As `post_root`, for a step's message in the thread."""
        assert write.step is not None and write.step.execution_id is not None
        assert write.message is not None and view.thread_ts is not None
        identity = Identity(view.run_id, "step", write.step.step.value, write.step.attempt)
        async with self.sessions() as session:
            execution = await repo_runs.get_execution(session, write.step.execution_id)
        if execution is None or execution.message_ts:
            return False
        posted_channel, ts, posted = await self._post(
            view, channel, identity, view.thread_ts, write.message.text,
            None if plain else write.message.blocks)
        async with self.sessions() as session, session.begin():
            recorded = await repo_runs.record_execution_message(
                session, write.step.execution_id, ts)
        if recorded not in (None, ts):
            await self._withdraw(view.run_id, posted_channel, ts, identity)
            return False
        return posted

    async def _withdraw(self, run_id: str, channel: str, ts: str, identity: Identity) -> None:
        """Another replica's copy of the message was recorded while ours was being posted
        (our claim lapsed mid-post): ours is a duplicate nobody will update, so it goes."""
        log.warning("run %s: another replica recorded %s first; deleting the copy at %s",
                    run_id, identity, ts)
        self.forget(run_id)
        await self.budget.take(channel)
        try:
            await self.client.chat_delete(channel=channel, ts=ts)
        except SlackApiError as exc:  # the recorded copy is the one drawn: this one only stays
            log.warning("run %s: the duplicate at %s could not be deleted (%s)", run_id, ts,
                        error_code(exc))

    async def update(self, channel: str, write: NextWrite, plain: bool = False) -> None:
        assert write.message is not None and write.ts
        await self.budget.take(channel)
        await self.client.chat_update(channel=channel, ts=write.ts, text=write.message.text,
                                      blocks=[] if plain else write.message.blocks)

    async def _upload(self, view: RunView, channel: str, filename: str, title: str,
                      content: str | bytes) -> None:
        assert view.thread_ts is not None
        contents = await self._contents(view, channel)
        if (filename, title) in contents.files:
            log.info("adopting %s already in the thread", filename)
            return
        await self.budget.take(channel)
        await self.client.files_upload_v2(channel=channel, thread_ts=view.thread_ts,
                                          filename=filename, title=title, content=content)
        contents.files.add((filename, title))

    async def attach_output(self, view: RunView, entry: PendingEntry, channel: str) -> None:
        """Output longer than the message shows goes to the thread as a file (from the log,
        not from `view`, which may predate the step's last lines)."""
        execution_id = entry.execution_id or ""
        async with self.sessions() as session:
            lines = await repo_events.all_output(session, view.run_id, execution_id)
        attempt = next((s.attempt for s in view.steps if s.execution_id == execution_id), 1)
        await self._upload(
            view, channel, f"{entry.step}-output.log",
            f"Full output of {entry.step} (attempt {attempt}, {len(lines)} lines)",
            "\n".join(lines) + "\n")

    async def post_summary(self, view: RunView, channel: str, plain: bool = False) -> None:
        """The post-mortem summary, then the timeline as markdown and as a picture; `view` is
        read after the run ended."""
        assert view.thread_ts is not None
        text, summary = blocks.run_summary(view)
        await self._post(view, channel, Identity(view.run_id, "summary"), view.thread_ts,
                         text, None if plain else summary)
        async with self.sessions() as session:
            events = await repo_events.all_events(session, view.run_id)
        await self._upload(view, channel, f"rollback-{view.run_id[:8]}.md", "Incident timeline",
                           timeline_markdown(view, events))
        picture = await asyncio.to_thread(render_png, chart_layout(view, events))
        await self._upload(view, channel, f"rollback-{view.run_id[:8]}-timeline.png",
                           "Incident timeline (picture)", picture)

    async def tell_initiator(self, view: RunView, text: str) -> bool:
        """By another path than the thread: a DM (posting to a user id opens the bot's IM)."""
        try:
            await self.client.chat_postMessage(channel=view.initiator_id, text=text)
        except Exception as exc:  # nothing else can be done; it is recorded
            log.error("could not tell %s either: %s", view.initiator_id, exc)
            return False
        return True
