"""What a step is handed for one run: settings, the SQL ledgers and the facts of earlier steps."""

from __future__ import annotations

from bot.db.ledgers import SqlNotificationLedger, SqlRotationLedger
from bot.domain.step_protocol import StepContext
from bot.engine.journal import Journal
from bot.settings import Settings


class StepContexts:
    def __init__(self, journal: Journal, settings: Settings) -> None:
        self.journal = journal
        self.settings = settings

    async def for_run(self, run_id: str) -> StepContext:
        return StepContext(
            run_id=run_id,
            settings=self.settings,
            rotations=SqlRotationLedger(self.journal.sessions),
            notifications=SqlNotificationLedger(self.journal.sessions),
            earlier_facts=await self.journal.earlier_facts(run_id),
        )
