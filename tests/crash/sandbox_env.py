"""The environment of a real `serve` rolling a sandbox api back: every step on the real thing."""

from __future__ import annotations

from pathlib import Path

from tests.crash.bot_process import base_env
from tests.fixtures.sandbox import SandboxApi, SandboxSeed
from tests.slackwire.fake_web_api import FakeSlack
from tests.steps.sandbox_settings import ALEMBIC, SANDBOX_DIR


def sandbox_env(fake: FakeSlack, bot_db_url: str, api: SandboxApi, seed: SandboxSeed,
                tmp_path: Path, **mailer: str) -> dict[str, str]:
    """`mailer`: MAILER and what it needs (SMTP_HOST and SMTP_PORT, or OUTBOX_DIR)."""
    return {**base_env(fake, bot_db_url, api.database_url, tmp_path),
            "DOWNGRADE_WORKDIR": str(SANDBOX_DIR),
            "DOWNGRADE_COMMAND": f"{ALEMBIC} downgrade 20260201_000006",
            "CODE_RESTORE_COMMAND": "git checkout -q phase-2",
            "CODE_RESTORE_WORKDIR": str(api.code_dir),
            "API_COMPOSE_PROJECT": api.project, "API_BASE_URL": api.base_url,
            "CLIENT_DIRECTORY": str(seed.directory_csv), **mailer}
