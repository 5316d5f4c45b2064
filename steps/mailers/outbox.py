"""The `outbox` mailer: one .eml file per message, written atomically (rehearsals, air gaps)."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path


class OutboxMailer:
    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.run_id = run_id

    def _write(self, message: EmailMessage) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tag = str(message.get("X-Rollback-Client", "client"))
        final = self.folder / f"{self.run_id[:8]}-{tag}.eml"
        partial = final.with_suffix(".eml.partial")
        partial.write_bytes(message.as_bytes())
        partial.rename(final)

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._write, message)

    async def close(self) -> None:
        """Nothing held open."""
