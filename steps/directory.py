"""Who to tell: the client directory, keyed by the client's OLD key hash.

No table in the service maps keys to emails, so contacts come from outside: a CSV
(`name,email,api_key_sha256`) or a query the operator configures on the target that returns
those three columns. Malformed lines are skipped and named (with their line numbers), not fatal:
one bad line must not keep every other client from hearing about their new key.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from bot.domain.step_protocol import StepError
from bot.settings import Settings
from steps.target_db import connect

HEX64 = re.compile(r"^[0-9a-f]{64}$")
EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
COLUMNS = ("name", "email", "api_key_sha256")


@dataclass(frozen=True)
class Contact:
    name: str
    email: str


@dataclass(frozen=True)
class Directory:
    contacts: dict[str, Contact]  # old key hash (lowercase hex) -> contact
    problems: list[str]  # malformed or duplicate lines, with their line numbers


async def load_directory(settings: Settings) -> Directory:
    if settings.client_directory_query:
        return await _from_query(settings)
    if settings.client_directory is None:
        raise StepError("no client directory: set CLIENT_DIRECTORY (CSV name,email,"
                        "api_key_sha256) or CLIENT_DIRECTORY_QUERY")
    path = settings.client_directory
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            found = [(name or "").strip().lower() for name in reader.fieldnames or ()]
            missing = [column for column in COLUMNS if column not in found]
            if missing:
                raise StepError(f"client directory {path} must have the header "
                                f"{','.join(COLUMNS)}; found {','.join(found) or 'nothing'}")
            reader.fieldnames = found
            # reader.line_num after a read is the physical line the row ended on.
            return parse_rows(((reader.line_num, row) for row in reader), "line")
    except FileNotFoundError:
        raise StepError(f"client directory {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StepError(f"cannot read client directory {path}: {exc}") from None


async def _from_query(settings: Settings) -> Directory:
    async with connect(settings.target_database_url.get_secret_value()) as conn:
        try:
            statement = await conn.prepare(settings.client_directory_query)
            columns = [attribute.name for attribute in statement.get_attributes()]
            missing = [column for column in COLUMNS if column not in columns]
            if missing:
                raise StepError(f"CLIENT_DIRECTORY_QUERY must return the columns "
                                f"{','.join(COLUMNS)}; it returns {','.join(columns)}")
            rows = await statement.fetch()
        except asyncpg.PostgresError as exc:
            raise StepError(f"CLIENT_DIRECTORY_QUERY failed on the target: {exc}") from None
    return parse_rows(((n, dict(row)) for n, row in enumerate(rows, start=1)), "query row")


def parse_rows(rows: Iterable[tuple[int, Mapping[str, Any]]], what: str) -> Directory:
    """Validate rows; the first row for a hash wins, later ones are reported."""
    contacts: dict[str, Contact] = {}
    first_seen: dict[str, int] = {}
    problems: list[str] = []
    for number, row in rows:
        key_hash = str(row.get("api_key_sha256") or "").strip().lower()
        email = str(row.get("email") or "").strip()
        if not HEX64.match(key_hash):
            problems.append(f"{what} {number}: api_key_sha256 is not 64 hex characters")
        elif not EMAIL.match(email):
            problems.append(f"{what} {number}: email {email[:80]!r} is not an address")
        elif key_hash in contacts:
            problems.append(f"{what} {number}: hash {key_hash[:8]} already listed on "
                            f"{what} {first_seen[key_hash]}; kept the first")
        else:
            contacts[key_hash] = Contact(str(row.get("name") or "").strip() or email, email)
            first_seen[key_hash] = number
    return Directory(contacts, problems)
