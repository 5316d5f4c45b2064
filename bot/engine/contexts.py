"""What a step is handed for one run: settings, the SQL ledgers, the facts of earlier steps, and
the key rotation the run works on (its own, or an earlier run's that it continues)."""

from __future__ import annotations

from bot.db import repo_rotations
from bot.db.ledgers import Fence, SqlNotificationLedger, SqlRotationLedger
from bot.domain.step_protocol import StepContext
from bot.engine.journal import Journal
from bot.settings import Settings


class StepContexts:
    def __init__(self, journal: Journal, settings: Settings, replica_id: str) -> None:
        self.journal = journal
        self.settings = settings
        self.replica_id = replica_id

    async def for_run(self, run_id: str, execution_id: str | None = None) -> StepContext:
        """For an execution (`execution_id`), the ledgers write only while this replica holds
        its lease; for plans and checks they are not fenced (they only read)."""
        fence = Fence(execution_id, self.replica_id) if execution_id else None
        async with self.journal.sessions() as session:
            rotation_id = await repo_rotations.rotation_of(session, run_id)
        return StepContext(
            run_id=run_id,
            settings=self.settings,
            rotations=SqlRotationLedger(self.journal.sessions, fence,
                                        self.settings.target_name),
            notifications=SqlNotificationLedger(self.journal.sessions, fence),
            earlier_facts=await self.journal.earlier_facts(run_id),
            execution_id=execution_id or "",
            rotation_id=rotation_id,
        )
