"""Step 6: the new keys work, a random key does not, and the api's logs since the restart.

A random sample of clients' new keys is read from the target and kept in memory only for the
probes: output and facts name clients by hash prefix, never by key, and an answer is shown by
its status and error code only — its body may echo the key or hold other clients' rows.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.settings import RestartStrategy, Settings
from steps.containers import docker_engine, selector
from steps.http_probe import HttpAnswer, HttpProbe, join_url
from steps.target_db import connect
from steps.target_sql import SAMPLE_KEYED_CLIENTS_SQL, SESSIONS_OWNED_BY_SQL

SESSIONS_PATH = "/api/v1/sessions"
PREFIX = 8

@dataclass(frozen=True)
class ClientKey:
    hash: str
    key: str  # in memory only

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"ClientKey({self.hash[:PREFIX]}…)"


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


async def probe_keys(settings: Settings, emit: OutputSink) -> dict[str, Any]:
    async with connect(settings.target_database_url.get_secret_value()) as conn:
        sample = [ClientKey(r["hash"], r["key"])
                  for r in await conn.fetch(SAMPLE_KEYED_CLIENTS_SQL, settings.verify_sample_size)]
        owned = {r["hash"]: set(r["ids"]) for r in
                 await conn.fetch(SESSIONS_OWNED_BY_SQL, [c.hash for c in sample])}
    url = join_url(settings.api_base_url, SESSIONS_PATH)
    passed: list[str] = []
    failed: list[str] = []
    async with HttpProbe(timeout_seconds=15) as http:
        # The random key first: its log line then has the longest time to reach the log.
        bogus = await http.get(url, headers={"X-API-Key": str(uuid.uuid4())})
        emit(f"random key: {bogus.describe_status()}")
        for client in sample:
            prefix = client.hash[:PREFIX]
            problem = judge(await http.get(url, headers={"X-API-Key": client.key}),
                            owned.get(client.hash, set()))
            if problem and hashlib.sha256(client.key.encode()).hexdigest() != client.hash:
                problem += " (its stored key does not match its stored hash)"
            if problem:
                failed.append(prefix)
                emit(f"client {prefix}: FAILED, {problem}")
            else:
                passed.append(prefix)
                emit(f"client {prefix}: 200 with only its own sessions "
                     f"({len(owned.get(client.hash, ()))} owned)")
    return {"sampled": len(sample), "passed": passed, "failed": failed,
            "bogus_key_status": bogus.status}


async def count_log_patterns(
    settings: Settings, since: datetime | None, emit: OutputSink
) -> dict[str, Any]:
    """Lines matching each pattern in every api container's logs since `since` (else its start)."""
    if settings.restart_strategy is RestartStrategy.COMMAND:
        emit("api logs not read: the restart strategy is `command`, not Docker")
        return {"log_pattern_counts": None, "containers": []}
    counts = dict.fromkeys(settings.verify_log_patterns, 0)
    async with docker_engine(settings) as engine:
        containers = await engine.find()
        if not containers:
            emit(f"api logs not read: no container matches {selector(settings)[1]}")
        for container in containers:
            start = since or container.started
            if start is None:
                continue
            for line in await engine.logs_since(container.id, start):
                for pattern in counts:
                    counts[pattern] += pattern in line
    for pattern, count in counts.items():
        emit(f"api log lines with {pattern!r} since the restart: {count}")
    return {"log_pattern_counts": counts, "containers": [c.name for c in containers]}


class VerifyStep:
    name = StepName.VERIFY

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        url = join_url(s.api_base_url, SESSIONS_PATH)
        return Plan(
            step=self.name,
            summary=f"GET {url} with {s.verify_sample_size} clients' new keys (expect 200 and "
                    "only their own sessions) and a random key (expect 401)",
            facts={"api": s.api_base_url, "sample": s.verify_sample_size,
                   "patterns": list(s.verify_log_patterns)},
            details=(
                "keys are read from the target database and never shown: clients appear by "
                "hash prefix",
                f"count lines with {', '.join(s.verify_log_patterns)} in the api logs since "
                "the restart",
            ),
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        """Never 'already done'.

        The engine calls `check` before `run` and records only the reason when it says done,
        so a passing check would leave no evidence (which clients, which answers, log counts)
        and a step that never ran would read "already done". Verifying changes nothing, so an
        approved verification always runs, and after a crash it simply runs again.
        """
        return CheckResult(False, "verification is read-only and always runs when approved")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        facts = await probe_keys(s, emit)
        restarted = ctx.earlier_facts.get(StepName.RESTART, {}).get("restarted_at")
        since = datetime.fromisoformat(restarted) if restarted else None
        facts["logs_since"] = restarted or "each container's start"
        facts.update(await count_log_patterns(s, since, emit))
        problems = []
        if facts["sampled"] == 0:
            problems.append("no client has a new key to try (was step 4 run?)")
        if facts["failed"]:
            problems.append(f"{len(facts['failed'])} of {facts['sampled']} new keys did not work "
                            f"({', '.join(facts['failed'])})")
        if facts["bogus_key_status"] != 401:
            problems.append(f"a random key answered {facts['bogus_key_status'] or 'nothing'}, "
                            "not 401")
        if problems:
            raise StepError("verification failed: " + "; ".join(problems))
        return Outcome(summary=f"{len(facts['passed'])}/{facts['sampled']} new keys work; "
                               "random key refused (401)", facts=facts)
