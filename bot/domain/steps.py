"""The six runbook steps, in order, with the words the thread uses for them."""

from __future__ import annotations

from enum import StrEnum


class StepName(StrEnum):
    BACKUP = "backup"
    DOWNGRADE = "downgrade"
    RESTART = "restart"
    ROTATE_KEYS = "rotate_keys"
    EMAIL_CLIENTS = "email_clients"
    VERIFY = "verify"


STEP_ORDER: tuple[StepName, ...] = tuple(StepName)

STEP_TITLES: dict[StepName, str] = {
    StepName.BACKUP: "Back up the database (pg_dump -F c)",
    StepName.DOWNGRADE: "Alembic downgrade to Phase 2",
    StepName.RESTART: "Restore Phase 2 code and restart api",
    StepName.ROTATE_KEYS: "Generate one new API key per client",
    StepName.EMAIL_CLIENTS: "Email each client its new key",
    StepName.VERIFY: "Verify authentication and logs",
}


def step_number(step: StepName) -> int:
    return STEP_ORDER.index(step) + 1


def next_step(step: StepName) -> StepName | None:
    index = STEP_ORDER.index(step)
    return STEP_ORDER[index + 1] if index + 1 < len(STEP_ORDER) else None
