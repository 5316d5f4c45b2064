"""The `outbox` mailer: one .eml file per message, written atomically and readable by the bot's
user only (it holds a key), for rehearsals and air gaps."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

from steps.files import make_private_dir, write_private
from steps.mailers import BeforeData


class OutboxMailer:
    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.run_id = run_id

    def _write(self, message: EmailMessage) -> None:
        make_private_dir(self.folder)
        tag = str(message.get("X-Rollback-Client", "client"))
        write_private(self.folder / f"{self.run_id[:8]}-{tag}.eml", message.as_bytes())

    async def send(self, message: EmailMessage, before_data: BeforeData | None = None) -> None:
        if before_data is not None:
            await before_data()  # just before the file is written
        await asyncio.to_thread(self._write, message)

    async def close(self) -> None:
        """Nothing held open."""
