"""Who to tell: the client directory, keyed by the client's OLD key hash.

No table in the service maps keys to emails, so contacts come from outside: a CSV
(`name,email,api_key_sha256`) or a query the operator configures on the target that returns
those three columns. Malformed lines are skipped and named (with their line numbers), not fatal:
one bad line must not keep every other client from hearing about their new key.

A hash may be listed with several contacts (on a service with one door key, everyone who uses it
is listed under that key's hash): each gets the email once. `fan_out` gives every extra contact
an identity of its own (a hash of old hash and address) for the notification ledger, so "once"
holds per contact across retries and crashes.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    contacts: dict[str, Contact]  # old key hash (lowercase hex) -> its first contact
    problems: list[str]  # malformed or duplicate lines, with their line numbers
    more: dict[str, list[Contact]] = field(default_factory=dict)  # further contacts per hash


def contact_id(old_hash: str, email: str) -> str:
    """The ledger identity of a hash's second, third, ... contact (64 hex, like a hash)."""
    return hashlib.sha256(f"{old_hash}\n{email.lower()}".encode()).hexdigest()


def fan_out(mapping: Mapping[str, str], directory: Directory
            ) -> tuple[dict[str, str], Directory]:
    """One entry per contact: the first keeps the old hash as its identity, each further one
    gets `contact_id`; all carry the hash's new hash. Hashes without contact stay as they are."""
    if not directory.more:
        return dict(mapping), directory
    recipients, contacts = dict(mapping), dict(directory.contacts)
    for old, new in mapping.items():
        for extra in directory.more.get(old, ()):
            recipients[contact_id(old, extra.email)] = new
            contacts[contact_id(old, extra.email)] = extra
    return recipients, Directory(contacts, directory.problems)


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
    """Validate rows; a hash's further contacts are kept in `more`, a repeated (hash, address)
    is reported."""
    contacts: dict[str, Contact] = {}
    more: dict[str, list[Contact]] = {}
    first_seen: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    for number, row in rows:
        key_hash = str(row.get("api_key_sha256") or "").strip().lower()
        email = str(row.get("email") or "").strip()
        if not HEX64.match(key_hash):
            problems.append(f"{what} {number}: api_key_sha256 is not 64 hex characters")
        elif not EMAIL.match(email):
            problems.append(f"{what} {number}: email {email[:80]!r} is not an address")
        elif (key_hash, email.lower()) in first_seen:
            problems.append(f"{what} {number}: hash {key_hash[:8]} with this address already "
                            f"listed on {what} {first_seen[key_hash, email.lower()]}; kept the "
                            f"first")
        else:
            contact = Contact(str(row.get("name") or "").strip() or email, email)
            if key_hash in contacts:
                more.setdefault(key_hash, []).append(contact)
            else:
                contacts[key_hash] = contact
            first_seen[key_hash, email.lower()] = number
    return Directory(contacts, problems, more)
