"""Commands get their secrets through their own environment settings (RESTART_ENV,
CODE_RESTORE_ENV, KEY_INSTALL_ENV, DOWNGRADE_ENV), never their arguments; what a command setting
still holds in its words is masked by shape in plans and facts, and every value of those
environments is masked wherever the Redactor goes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bot.domain.memory_ledgers import MemoryNotificationLedger, MemoryRotationLedger
from bot.domain.redaction import Redactor
from bot.domain.step_protocol import StepContext
from bot.engine.plans import bounded_plan
from bot.settings import Settings
from steps.key_installers import DoorKey, install_by_command
from steps.restart import RestartStep, restore_code

GIT_TOKEN = "ghp_9f8e7d6c5b4a39281706"
DEPLOY_TOKEN = "dpl-1122334455667788"


@pytest.mark.parametrize(("words", "secret"), [
    ("deploy --token=abcd1234efgh restart api", "abcd1234efgh"),
    ("deploy --api-key abcd1234efgh", "abcd1234efgh"),
    ("mysql --password=hunter2hunter2 -e 'select 1'", "hunter2hunter2"),
    ("env DEPLOY_TOKEN=zz9988776655 ./restart.sh", "zz9988776655"),
    ("curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x' https://ops/restart",
     "eyJhbGciOiJIUzI1NiJ9.e30.x"),
    ("git clone https://bot:glpat-1234567890@git.example/api.git", "glpat-1234567890"),
])
def test_a_secret_written_into_a_command_is_masked(words: str, secret: str) -> None:
    redact = Redactor.for_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    shown = redact(words)
    assert secret not in shown and "***" in shown
    assert shown.split()[0] == words.split()[0], "the command itself is still shown"


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, code_restore_workdir=tmp_path,  # type: ignore[call-arg]
                    restart_strategy="command", **values)


async def test_the_restart_plan_shows_commands_without_their_secrets(tmp_path: Path) -> None:
    s = settings(tmp_path, code_restore_command=f"git fetch --token={GIT_TOKEN}",
                 restart_command=f"env DEPLOY_TOKEN={DEPLOY_TOKEN} ./restart.sh",
                 restart_env={"OPS_TOKEN": "ops-secret-value-1"})
    ctx = StepContext(str(uuid.uuid4()), s, MemoryRotationLedger(), MemoryNotificationLedger())
    plan = await bounded_plan(RestartStep(), ctx)
    shown = " ".join([plan.summary, *plan.details, str(plan.facts)])
    assert "git fetch --token=***" in shown and "env DEPLOY_TOKEN=*** ./restart.sh" in shown
    for secret in (GIT_TOKEN, DEPLOY_TOKEN):
        assert secret not in shown


async def test_each_command_gets_its_own_secret_environment_masked_everywhere(
    tmp_path: Path,
) -> None:
    printed = tmp_path / "seen"
    s = settings(tmp_path,
                 code_restore_command=f"sh -c 'printf %s \"$GIT_TOKEN\" > {printed}; echo ok'",
                 code_restore_env=f'{{"GIT_TOKEN": "{GIT_TOKEN}"}}',
                 key_install_env={"VAULT_TOKEN": "s.vault-token-0001"})
    lines: list[str] = []
    facts = await restore_code(s, lines.append)
    assert facts["exit"] == 0
    assert printed.read_text() == GIT_TOKEN, "the child got its secret in its environment"
    assert GIT_TOKEN not in " ".join(lines), "never in its arguments"

    key = DoorKey("new-door-key-value-123", "0" * 64)
    seen = tmp_path / "vault"
    await install_by_command(f"sh -c 'printf %s \"$VAULT_TOKEN\" > {seen}; cat >/dev/null'",
                             key, lines.append, s.key_install_env)
    assert seen.read_text() == "s.vault-token-0001"

    redact = Redactor.for_settings(s)
    for secret in (GIT_TOKEN, "s.vault-token-0001"):
        assert secret not in redact(f"the child printed {secret}")
