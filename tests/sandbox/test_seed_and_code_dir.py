"""Seeding the Phase 3 head (hash only, directory CSV) and the two-phase code checkout."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
from pathlib import Path

from sandbox.code_dir import make_code_dir
from sandbox.seed import sha256_hex
from tests.fixtures.postgres import DatabaseFactory
from tests.fixtures.sandbox import SandboxSeed
from tests.sandbox.helpers import fetch

REPO = Path(__file__).resolve().parents[2]


async def sandbox_cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sandbox", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode() + err.decode()


async def test_seed_command_writes_the_directory_without_the_last_k_clients(
    tmp_path: Path, databases: DatabaseFactory
) -> None:
    url = await databases.create("seedcli")
    await sandbox_cli("migrate", "--database-url", url, "--revision", "head")
    directory, keys_out = tmp_path / "clients.csv", tmp_path / "keys.json"
    output = await sandbox_cli("seed", "--database-url", url, "--clients", "10",
                               "--sessions-per-client", "2", "--assistants-per-client", "3",
                               "--without-contact", "3", "--directory-csv", str(directory),
                               "--keys-out", str(keys_out))
    with directory.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = json.loads(keys_out.read_text())
    assert [r["email"] for r in rows] == [k["email"] for k in keys[:7]]
    assert [r["api_key_sha256"] for r in rows] == [sha256_hex(k["key"]) for k in keys[:7]]
    assert rows[0] == {"name": "Client 00001", "email": "client00001@example.test",
                       "api_key_sha256": keys[0]["key_hash"]}
    assert [k["has_contact"] for k in keys] == [True] * 7 + [False] * 3
    owned = await fetch(url, "SELECT owner_api_key_hash, count(*) FROM sessions GROUP BY 1")
    assert {r[0]: r[1] for r in owned} == {k["key_hash"]: 2 for k in keys}
    assistants = await fetch(url, "SELECT owner_api_key_hash, count(*) FROM assistants GROUP BY 1")
    assert {r[0]: r[1] for r in assistants} == {k["key_hash"]: 3 for k in keys}
    assert not any(k["key"] in output for k in keys)  # the command never prints a key
    assert keys_out.stat().st_mode & 0o077 == 0


async def test_seeded_template_holds_hashes_only(
    sandbox_seed: SandboxSeed, target_db_url: str
) -> None:
    clients = sandbox_seed.result.clients
    assert len(clients) == 6 and [c.has_contact for c in clients] == [True] * 5 + [False]
    for client in clients:
        rows = await fetch(target_db_url, "SELECT id::text, session_metadata FROM sessions "
                                          "WHERE owner_api_key_hash = $1", client.key_hash)
        assert sorted(r[0] for r in rows) == sorted(client.session_ids)
        assert all(json.loads(r[1]) == {"client": client.name} for r in rows)
    dump = ""
    for table in ("sessions", "assistants", "session_messages"):
        rows = await fetch(target_db_url, f"SELECT * FROM {table}")
        dump += " ".join(str(tuple(r)) for r in rows)
    assert str(clients[0].session_ids[0]) in dump
    assert not any(c.key in dump for c in clients)  # Phase 3 stores no plaintext anywhere
    with sandbox_seed.directory_csv.open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 5


def git(code_dir: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=code_dir, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_code_dir_checkout_of_phase_2_restores_phase_2(tmp_path: Path) -> None:
    code_dir = make_code_dir(tmp_path / "service")
    assert (code_dir / "PHASE").read_text().strip() == "3"
    assert git(code_dir, "rev-parse", "HEAD") == git(code_dir, "rev-parse", "phase-3^{commit}")
    git(code_dir, "checkout", "-q", "phase-2")
    assert (code_dir / "PHASE").read_text().strip() == "2"
    assert git(code_dir, "status", "--porcelain") == ""


async def test_make_code_dir_command(tmp_path: Path) -> None:
    await sandbox_cli("make-code-dir", str(tmp_path / "svc"))
    assert git(tmp_path / "svc", "tag", "--list", "phase-*").split() == ["phase-2", "phase-3"]
