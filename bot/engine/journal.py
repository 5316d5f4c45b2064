"""The one unit the engine's parts share: sessions on the bot database, the incident log, and
change notices.

Every transition writes its state change and its incident event in one transaction, then says
"run X changed" to whoever draws runs (the Slack mirror, the terminal front). The decisions
(`transitions`), the step executor and recovery all go through this object and never through
one another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events, repo_runs
from bot.domain.events import EventKind, Source
from bot.domain.states import DONE_STEP_STATUSES, StepStatus
from bot.domain.steps import STEP_ORDER, StepName

log = logging.getLogger(__name__)

ChangeListener = Callable[[str], None]


class Journal:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self._listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def changed(self, run_id: str) -> None:
        for listener in self._listeners:
            try:
                listener(run_id)
            except Exception:  # a broken view must never stop the engine
                log.exception("change listener failed")

    async def append(
        self, run_id: str, kind: EventKind, step: StepName | str | None, data: dict[str, Any],
        actor: str = "bot", source: Source = Source.BOT,
    ) -> int:
        """One event in its own transaction, then the change notice."""
        async with self.sessions() as session, session.begin():
            event_id = await repo_events.append_event(
                session, run_id, actor, source, kind, step, data
            )
        self.changed(run_id)
        return event_id

    async def earlier_facts(self, run_id: str) -> dict[StepName, Mapping[str, Any]]:
        """Facts of the steps already done in this run (a step may build on them)."""
        async with self.sessions() as session:
            facts: dict[StepName, Mapping[str, Any]] = {}
            for name in STEP_ORDER:
                execution = await repo_runs.latest_execution(session, run_id, name)
                if execution is not None and StepStatus(execution.status) in DONE_STEP_STATUSES:
                    facts[name] = execution.facts or {}
            return facts
