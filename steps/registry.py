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
    from steps.verify import VerifyStep

    steps: list[Step] = [
        BackupStep(),
        DowngradeStep(),
        RestartStep(),
        RotateKeysStep(),
        EmailClientsStep(),
        VerifyStep(),
    ]
    return {step.name: step for step in steps}
