"""Asking the api whether new keys work: step 5's canary and step 6 share these probes.

A sample of clients' new keys is read from the target and kept in memory only for the probes
(`ClientKey` never shows its key, even in a traceback); every line and fact names clients by
hash prefix. An answer to a real key is shown by its status and error code only — its body may
echo the key or hold other clients' rows. A random, never-issued key goes first: the api must
refuse it, or a 200 to a real key proves nothing.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from bot.domain.step_protocol import OutputSink
from bot.settings import Settings
from steps.http_probe import HttpAnswer, HttpProbe, join_url
from steps.target_db import connect
from steps.target_sql import KEYS_ON_ROWS_OF_SQL, SAMPLE_KEYED_CLIENTS_SQL, SESSIONS_OWNED_BY_SQL

SESSIONS_PATH = "/api/v1/sessions"
PREFIX = 8
PROBE_TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class ClientKey:
    hash: str
    key: str | None  # in memory only; None: no row of the client holds one
    key_count: int = 1  # distinct keys on the client's rows (1 unless a row was changed)

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"ClientKey({self.hash[:PREFIX]}…)"


@dataclass(frozen=True)
class ProbeReport:
    """What the api answered: clients by hash prefix, answers by status and error code."""

    sampled: int
    passed: list[str]
    failed: dict[str, str]  # hash prefix -> why (status and error code, never a body)
    random_key: HttpAnswer  # what a never-issued key was answered


def sessions_url(settings: Settings) -> str:
    return join_url(settings.api_base_url, SESSIONS_PATH)


def judge(answer: HttpAnswer, own_ids: set[str]) -> str | None:
    """Why the answer is wrong for a client owning `own_ids`, or None if it is right."""
    if answer.status != 200:
        return answer.describe_status()  # the body answered a real key: never copied
    body = answer.body if isinstance(answer.body, dict) else {}
    rows = body.get("sessions")
    if not isinstance(rows, list):
        return "answered 200 without a `sessions` list"
    seen = {str(row.get("id")) for row in rows if isinstance(row, dict)}
    if seen - own_ids:
        return f"answered 200 with {len(seen - own_ids)} sessions of other clients"
    total = body.get("total")
    if isinstance(total, int) and total != len(own_ids):
        return f"answered 200 with total {total}, but the client owns {len(own_ids)} sessions"
    if own_ids and not seen:
        return f"answered 200 with none of its {len(own_ids)} sessions"
    return None


async def read_sample(settings: Settings, among: Collection[str] | None = None
                      ) -> tuple[list[ClientKey], dict[str, set[str]]]:
    """`VERIFY_SAMPLE_SIZE` clients' new keys and the session ids each owns.

    `among` (new hashes) limits the sample to those clients — the ones step 5 will mail —
    and every sampled client is kept, even one whose rows hold no key or several; without
    it, any client on the target that carries a key."""
    size = settings.verify_sample_size
    async with connect(settings.target_database_url.get_secret_value()) as conn:
        if among is None:
            sample = [ClientKey(r["hash"], r["key"])
                      for r in await conn.fetch(SAMPLE_KEYED_CLIENTS_SQL, size)]
        else:
            candidates = sorted(set(among))
            chosen = random.sample(candidates, min(size, len(candidates)))
            found = {r["hash"]: [k for k in r["keys"] if k is not None]
                     for r in await conn.fetch(KEYS_ON_ROWS_OF_SQL, chosen)}
            sample = [ClientKey(h, (found.get(h) or [None])[0], len(found.get(h, [])))
                      for h in chosen]
        owned = {r["hash"]: set(r["ids"]) for r in
                 await conn.fetch(SESSIONS_OWNED_BY_SQL, [c.hash for c in sample])}
    return sample, owned


def _stored_key_problem(client: ClientKey) -> str | None:
    if client.key is None:
        return "no row of the client holds a key"
    if client.key_count > 1:
        return f"its rows hold {client.key_count} different keys"
    return None


async def probe_sample(settings: Settings, sample: list[ClientKey],
                       owned: dict[str, set[str]], emit: OutputSink) -> ProbeReport:
    """GET the sessions list with a random key, then with each sampled client's key."""
    url = sessions_url(settings)
    passed: list[str] = []
    failed: dict[str, str] = {}
    async with HttpProbe(timeout_seconds=PROBE_TIMEOUT_SECONDS) as http:
        # The random key first: its log line then has the longest time to reach the log.
        bogus = await http.get(url, headers={"X-API-Key": str(uuid.uuid4())})
        emit(f"random key: {bogus.describe_status()}")
        for client in sample:
            prefix = client.hash[:PREFIX]
            own = owned.get(client.hash, set())
            problem = _stored_key_problem(client)
            if problem is None and client.key is not None:
                problem = judge(await http.get(url, headers={"X-API-Key": client.key}), own)
                if problem and hashlib.sha256(client.key.encode()).hexdigest() != client.hash:
                    problem += " (its stored key does not match its stored hash)"
            if problem:
                failed[prefix] = problem
                emit(f"client {prefix}: FAILED, {problem}")
            else:
                passed.append(prefix)
                emit(f"client {prefix}: 200 with only its own sessions ({len(own)} owned)")
    return ProbeReport(len(sample), passed, failed, bogus)
