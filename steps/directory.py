"""Who to tell: the client directory, keyed by the client's OLD key hash.

No table in the service maps keys to emails, so contacts come from outside: a CSV
(`name,email,api_key_sha256`) or a query the operator configures on the target.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

from bot.settings import Settings
from steps.protocol import StepError
from steps.target_db import connect

HEX64 = re.compile(r"^[0-9a-f]{64}$")
COLUMNS = ("name", "email", "api_key_sha256")


@dataclass(frozen=True)
class Contact:
    name: str
    email: str


@dataclass(frozen=True)
class Directory:
    contacts: dict[str, Contact]
    problems: list[str]  # malformed lines, with their line numbers


async def load_directory(settings: Settings) -> Directory:
    if settings.client_directory_query:
        async with connect(settings.target_database_url.get_secret_value()) as conn:
            rows = await conn.fetch(settings.client_directory_query)
        return _parse(((i + 1, dict(r)) for i, r in enumerate(rows)), "query row")
    if settings.client_directory is None:
        raise StepError("no client directory: set CLIENT_DIRECTORY (CSV name,email,"
                        "api_key_sha256) or CLIENT_DIRECTORY_QUERY")
    path = settings.client_directory
    if not path.exists():
        raise StepError(f"client directory {path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise StepError(f"client directory {path} must have the header "
                            f"{','.join(COLUMNS)}; found {','.join(reader.fieldnames or [])}")
        return _parse(((n + 2, row) for n, row in enumerate(reader)), "line")


def _parse(rows: object, what: str) -> Directory:
    contacts: dict[str, Contact] = {}
    problems: list[str] = []
    for number, row in rows:  # type: ignore[attr-defined]
        key_hash = str(row.get("api_key_sha256") or "").strip().lower()
        email = str(row.get("email") or "").strip()
        if not HEX64.match(key_hash) or "@" not in email:
            problems.append(f"{what} {number}: needs an email and a 64-hex api_key_sha256")
            continue
        contacts[key_hash] = Contact(str(row.get("name") or "").strip() or email, email)
    return Directory(contacts, problems)
