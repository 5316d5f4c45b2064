"""The six runbook steps, wired to the real outside world."""

from __future__ import annotations

from collections.abc import Mapping

from bot.domain.step_protocol import Step
from bot.domain.steps import StepName


def default_steps() -> Mapping[StepName, Step]:
    from steps.backup import BackupStep
    from steps.downgrade import DowngradeStep
    from steps.email_clients import EmailClientsStep
    from steps.restart import RestartStep
    from steps.rotate_keys import RotateKeysStep
    from steps.service_key import (
        KeyModelNotes,
        KeyModelRotation,
        email_notes,
        restart_notes,
        verify_notes,
    )
    from steps.verify import VerifyStep

    # KeyModelRotation adds the door key (KEY_MODEL=service) and the cache invalidation to the
    # rotation; KeyModelNotes tells in the other plans what the service model changes for them.
    steps: list[Step] = [
        BackupStep(),
        DowngradeStep(),
        KeyModelNotes(RestartStep(), restart_notes),
        KeyModelRotation(RotateKeysStep()),
        KeyModelNotes(EmailClientsStep(), email_notes),
        KeyModelNotes(VerifyStep(), verify_notes),
    ]
    return {step.name: step for step in steps}
