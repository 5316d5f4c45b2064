"""Seed the sandbox at the Phase 3 head: N clients (hash only), their sessions and assistants,
and the client directory CSV (`name,email,api_key_sha256`) the email step reads.

With `shared_key` the clients are the people using a service with one door key, as the real
service is used: every row carries the hash of that one key, and the directory lists every
contact under it. `write_env_file` writes the service's dotenv holding that key.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bot.urls import libpq_url, password_of


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
    shared_key: bool = False,
) -> SeedResult:
    """Insert every row with COPY (set-based: 1,000 clients take about a second)."""
    if not 0 <= without_contact <= clients:
        raise ValueError(f"without_contact must be between 0 and {clients}")
    door_key = str(uuid.uuid4()) if shared_key else None
    seeded = [_new_client(n, clients - without_contact, sessions_per_client,
                          assistants_per_client, door_key) for n in range(clients)]
    sessions = [(uuid.UUID(sid), "claude-sonnet-4", "completed", f"/srv/work/{c.email}", 2,
                 json.dumps({"client": c.name}), c.key_hash)
                for c in seeded for sid in c.session_ids]
    messages = [(uuid.UUID(sid), role, json.dumps({"text": f"{role} says hello"}))
                for c in seeded for sid in c.session_ids for role in ("user", "assistant")]
    assistants = [(aid, "claude-sonnet-4", f"{c.name} helper", json.dumps({"client": c.name}),
                   c.key_hash) for c in seeded for aid in c.assistant_ids]
    conn = await asyncpg.connect(libpq_url(database_url), password=password_of(database_url))
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("sessions", records=sessions, columns=[
                "id", "model", "status", "working_directory", "total_turns",
                "session_metadata", "owner_api_key_hash"])
            await conn.copy_records_to_table("session_messages", records=messages,
                                             columns=["session_id", "role", "content"])
            await conn.copy_records_to_table("assistants", records=assistants, columns=[
                "id", "model", "name", "assistant_metadata", "owner_api_key_hash"])
    finally:
        await conn.close()
    if directory_csv is not None:
        write_directory(directory_csv, seeded)
    return SeedResult(seeded)


def _new_client(n: int, with_contact: int, sessions: int, assistants: int,
                door_key: str | None = None) -> SeededClient:
    key = door_key or str(uuid.uuid4())
    return SeededClient(
        name=f"Client {n + 1:05d}", email=f"client{n + 1:05d}@example.test", key=key,
        key_hash=sha256_hex(key), has_contact=n < with_contact,
        session_ids=[str(uuid.uuid4()) for _ in range(sessions)],
        assistant_ids=[f"asst_{uuid.uuid4().hex[:24]}" for _ in range(assistants)])


def write_keys(path: Path, clients: list[SeededClient]) -> None:
    """The Phase 3 keys, for tests of the Phase 3 api only: owner-readable, never logged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps([{"name": c.name, "email": c.email, "key": c.key,
                                 "key_hash": c.key_hash, "has_contact": c.has_contact}
                                for c in clients], indent=1))


def write_directory(path: Path, clients: list[SeededClient]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "email", "api_key_sha256"])
        writer.writerows([c.name, c.email, c.key_hash] for c in clients if c.has_contact)


def write_env_file(path: Path, key: str) -> None:
    """The service's `.env` as its `.env.example` shapes it, holding the door key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o640)
    path.write_text("# claude-agent-api settings (sandbox)\n"
                    f"API_KEY={key}\n"
                    "DEBUG=true\n"
                    "REDIS_SESSION_TTL=3600\n", encoding="utf-8")
