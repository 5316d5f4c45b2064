"""Who to tell: the client directory, keyed by the client's OLD key hash.

No table in the service maps keys to emails, so contacts come from outside: a CSV
(`name,email,api_key_sha256`) or a query the operator configures on the target that returns
those three columns; with both set, the query is used. Malformed rows are refused and named
(CSV: the file line the row starts on; query: its row number), never fatal: one bad row must
not keep every other client from hearing about their new key, and a bad address must never
reach the mailer. `load_directory` is the one reading step 5 and `rollback-bot check` share.

Addresses are parsed by `email-validator`, not a pattern: a bare `addr-spec` only, so group
syntax (`a:b@c.de`, which the email package would deliver to `b@c.de`), display names, comments
(`(x@y.zz`), domain literals (`x@[y.zz`), line breaks and empty values are refused, and so is a
non-ASCII mailbox name (the email package would write it as an encoded word no server reads; an
international domain is sent in its ASCII form). The `.test` names of rehearsals are accepted;
deliverability (DNS) is not asked.

A CSV is parsed and validated once, in a thread (100,000 rows take seconds of email-validator's
checks, which would stall every click and reply on the event loop), and kept while the file is
unchanged: keyed by its path and KEY_MODEL, valid while its device, inode, size, mtime and ctime
stay the same, so the five or so loads of a step (plan, re-plans on each click, check, run) cost
a `stat` each, and an edited or replaced file is read afresh. A file modified less than 2 s
before its read is not kept (file clocks tick coarsely: an edit within the same tick of the
same size would go unseen). The cached `Directory` is shared:
callers must not change it (`fan_out` copies). A load still running when a plan's deadline runs
out goes on in its thread, so the next click finds it done. The query source is asked afresh on
every load (nothing tells us its answer is unchanged); only its rows' checks leave the loop.

With `KEY_MODEL=service` a hash may be listed with several addresses: everyone who uses the
service shares its one door key and is listed under that key's hash, and each is mailed once.
`fan_out` gives every further contact an identity of its own (a hash of old hash and address)
for the notification ledger, so "once" holds per contact across retries and crashes. In the
per-client model two addresses for one client stay a conflict that mails neither.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from email_validator import EmailNotValidError, validate_email

from bot.domain.plan_parts import plan_part
from bot.domain.step_protocol import StepError
from bot.settings import KeyModel, Settings
from steps.target_db import connect

HEX64 = re.compile(r"^[0-9a-f]{64}$")
COLUMNS = ("name", "email", "api_key_sha256")
SHOWN_CHARS = 80


@dataclass(frozen=True)
class Contact:
    name: str
    email: str


@dataclass(frozen=True)
class Directory:
    contacts: dict[str, Contact]  # old key hash (lowercase hex) -> (its first) contact
    problems: list[str]  # refused rows, with their line or row numbers
    more: dict[str, list[Contact]] = field(default_factory=dict)  # KEY_MODEL=service: the rest


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


class BadAddress(ValueError):
    """Why a directory value is not one deliverable address."""


def parse_address(value: str) -> str:
    """The address to send to (domain normalised), or BadAddress saying why not."""
    if not value.strip():
        raise BadAddress("is empty")
    if any(ch in value for ch in "\r\n\0"):
        raise BadAddress("holds a line break")
    try:
        parsed = validate_email(value.strip(), check_deliverability=False,
                                test_environment=True, allow_smtputf8=False,
                                allow_display_name=False,
                                allow_domain_literal=False, allow_quoted_local=False)
    except EmailNotValidError as exc:
        raise BadAddress(f"is not an address: {exc}") from None
    return parsed.ascii_email or parsed.normalized


LOADING = "loading the client directory"


async def load_directory(settings: Settings) -> Directory:
    with plan_part(LOADING):
        if settings.client_directory_query:
            return await _from_query(settings)
        if settings.client_directory is None:
            raise StepError("no client directory: set CLIENT_DIRECTORY (CSV name,email,"
                            "api_key_sha256) or CLIENT_DIRECTORY_QUERY")
        return await CSV_CACHE.load(settings.client_directory,
                                    settings.key_model is KeyModel.SERVICE)


Stamp = tuple[int, int, int, int, int]  # device, inode, size, mtime and ctime (ns)
RACY_NS = 2_000_000_000  # a file changed this recently may change again unseen by its stamp


def _stamp(path: Path) -> Stamp:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class CsvCache:
    """Parsed CSV directories by (path, several), each with the stamp of the file it was read
    from. A parse runs in a daemon thread of its own and is shared by every load that asks for
    the same stamp meanwhile; a failed one is not kept (the next load tries again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, bool], tuple[Stamp, Future[Directory]]] = {}

    async def load(self, path: Path, several: bool) -> Directory:
        try:
            stamp = _stamp(path)
        except FileNotFoundError:
            raise StepError(f"client directory {path} does not exist") from None
        except OSError as exc:
            raise StepError(f"cannot read client directory {path}: {exc}") from None
        slot = (str(path), several)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is not None and entry[0] == stamp:
                future = entry[1]
            else:
                future = Future()
                self._entries[slot] = (stamp, future)
                threading.Thread(target=self._parse, args=(slot, stamp, path, future),
                                 name="client-directory", daemon=True).start()
        # shielded: a plan cancelled at its deadline leaves the parse to finish for the next
        return await asyncio.shield(asyncio.wrap_future(future))

    def _parse(self, slot: tuple[str, bool], stamp: Stamp, path: Path,
               future: Future[Directory]) -> None:
        future.set_running_or_notify_cancel()
        started = time.time_ns()
        try:
            directory = _from_csv(path, slot[1])
            try:
                unchanged = _stamp(path) == stamp
            except OSError:
                unchanged = False
        except BaseException as exc:
            self._forget(slot, future)
            future.set_exception(exc)
            return
        # Written to while read, or so shortly before that a second write in the same tick of
        # the file system's clock would leave the stamp as it is ("racy git"): shared with the
        # loads waiting for it, not kept for later ones.
        if not unchanged or started - stamp[3] < RACY_NS:
            self._forget(slot, future)
        future.set_result(directory)

    def _forget(self, slot: tuple[str, bool], future: Future[Directory]) -> None:
        with self._lock:
            if slot in self._entries and self._entries[slot][1] is future:
                del self._entries[slot]


CSV_CACHE = CsvCache()


def _from_csv(path: Path, several: bool = False) -> Directory:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            missing = [column for column in COLUMNS if column not in header]
            if missing:
                raise StepError(f"client directory {path} must have the header "
                                f"{','.join(COLUMNS)}; found {','.join(header) or 'nothing'}")
            problems: list[str] = []
            rows = list(_csv_rows(reader, header, problems))
    except FileNotFoundError:
        raise StepError(f"client directory {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StepError(f"cannot read client directory {path}: {exc}") from None
    found = parse_rows(rows, "line", several)
    return Directory(found.contacts, problems + found.problems, found.more)


def _csv_rows(reader: Any, header: list[str], problems: list[str]
              ) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line the row starts on, row); blank lines skipped, unreadable rows named."""
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(f"line {start}: unreadable ({exc})")
            continue
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            problems.append(f"line {start}: {len(fields)} fields, the header has "
                            f"{len(header)}")
            continue
        yield start, dict(zip(header, fields, strict=True))


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
    return await asyncio.to_thread(
        parse_rows, [(n, dict(row)) for n, row in enumerate(rows, start=1)], "query row",
        settings.key_model is KeyModel.SERVICE)


def parse_rows(rows: Iterable[tuple[int, Mapping[str, Any]]], what: str,
               several: bool = False) -> Directory:
    """Validate rows. A hash listed twice with the same address keeps the first row; with
    different addresses it is refused altogether (a key must not go to a guess), unless
    `several` (KEY_MODEL=service: one door key for everyone listed) keeps each address."""
    contacts: dict[str, Contact] = {}
    more: dict[str, list[Contact]] = {}
    listed: dict[tuple[str, str], int] = {}
    first_seen: dict[str, int] = {}
    conflicted: set[str] = set()
    problems: list[str] = []
    for number, row in rows:
        key_hash = str(row.get("api_key_sha256") or "").strip().lower()
        raw = row.get("email")
        email = "" if raw is None else str(raw)
        if not HEX64.match(key_hash):
            problems.append(f"{what} {number}: api_key_sha256 is not 64 hex characters")
            continue
        try:
            address = parse_address(email)
        except BadAddress as exc:
            problems.append(f"{what} {number}: email {email[:SHOWN_CHARS]!r} {exc}")
            continue
        name = " ".join(str(row.get("name") or "").split())  # no line breaks in a greeting
        if several and (key_hash, address.lower()) in listed:
            problems.append(f"{what} {number}: hash {key_hash[:8]} with this address already "
                            f"listed on {what} {listed[key_hash, address.lower()]}; kept the "
                            "first")
        elif several:
            contact = Contact(name or address, address)
            if key_hash in contacts:
                more.setdefault(key_hash, []).append(contact)
            else:
                contacts[key_hash] = contact
            listed[key_hash, address.lower()] = number
        elif key_hash in conflicted:
            problems.append(f"{what} {number}: hash {key_hash[:8]} listed again; refused "
                            "(conflicting addresses)")
        elif key_hash in contacts and contacts[key_hash].email != address:
            problems.append(f"{what} {number}: hash {key_hash[:8]} already listed on {what} "
                            f"{first_seen[key_hash]} with another address; neither is "
                            "emailed")
            conflicted.add(key_hash)
            del contacts[key_hash]
        elif key_hash in contacts:
            problems.append(f"{what} {number}: hash {key_hash[:8]} already listed on "
                            f"{what} {first_seen[key_hash]}; kept the first")
        else:
            contacts[key_hash] = Contact(name or address, address)
            first_seen[key_hash] = number
    return Directory(contacts, problems, more)
