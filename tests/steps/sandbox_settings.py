"""Settings that point every step at the sandbox of one test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bot.settings import Settings
from tests.steps.step_context import settings_for

SANDBOX_DIR = Path(__file__).resolve().parents[2] / "sandbox"
ALEMBIC = Path(sys.prefix) / "bin" / "alembic"


def sandbox_settings(target_db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "target_database_url": target_db_url,
        "backup_dir": tmp_path / "backups",
        "downgrade_command": f"{ALEMBIC} downgrade 20260201_000006",
        "downgrade_workdir": SANDBOX_DIR,
        "mailer": "outbox",
        "outbox_dir": tmp_path / "outbox",
        "health_timeout_seconds": 30,
        **overrides,
    }
    return settings_for(**values)
