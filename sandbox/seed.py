"""Seed the sandbox at the Phase 3 head: N clients (hash only), their sessions and assistants,
and the client directory CSV (`name,email,api_key_sha256`) the email step reads."""

from __future__ import annotations

import csv
import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bot.db.urls import libpq_url, password_of


@dataclass(frozen=True)
class SeededClient:
    name: str
    email: str
    key: str  # the Phase 3 key: lost by the rollback, kept here only for tests of Phase 3
    key_hash: str
    has_contact: bool
    session_ids: list[str] = field(default_factory=list)
    assistant_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SeedResult:
    clients: list[SeededClient]


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def seed(
    database_url: str, clients: int, *, sessions_per_client: int = 3,
    assistants_per_client: int = 1, without_contact: int = 0, directory_csv: Path | None = None,
) -> SeedResult:
    seeded: list[SeededClient] = []
    sessions: list[tuple[uuid.UUID, str, str]] = []
    assistants: list[tuple[str, str, str]] = []
    for n in range(clients):
        key = str(uuid.uuid4())
        key_hash = sha256_hex(key)
        session_ids = [uuid.uuid4() for _ in range(sessions_per_client)]
        assistant_ids = [f"asst_{uuid.uuid4().hex[:24]}" for _ in range(assistants_per_client)]
        sessions += [(sid, "claude-sonnet", key_hash) for sid in session_ids]
        assistants += [(aid, f"assistant {n + 1}", key_hash) for aid in assistant_ids]
        seeded.append(SeededClient(
            name=f"Client {n + 1:05d}", email=f"client{n + 1:05d}@example.test", key=key,
            key_hash=key_hash, has_contact=n < clients - without_contact,
            session_ids=[str(s) for s in session_ids], assistant_ids=assistant_ids,
        ))
    conn = await asyncpg.connect(libpq_url(database_url), password=password_of(database_url))
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "sessions", records=sessions, columns=["id", "model", "owner_api_key_hash"])
            await conn.copy_records_to_table(
                "assistants", records=[(a, "claude-sonnet", name, h) for a, name, h in assistants],
                columns=["id", "model", "name", "owner_api_key_hash"])
    finally:
        await conn.close()
    if directory_csv is not None:
        write_directory(directory_csv, seeded)
    return SeedResult(seeded)


def write_directory(path: Path, clients: list[SeededClient]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "email", "api_key_sha256"])
        writer.writerows([c.name, c.email, c.key_hash] for c in clients if c.has_contact)
