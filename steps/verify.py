"""Step 6: the new keys work, a random key does not, and the api's logs since the restart.

Keys are read from the target and kept in memory only for the probes; the thread sees hash
prefixes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import aiohttp

from bot.domain.steps import StepName
from bot.settings import RestartStrategy, Settings
from steps.containers import docker_engine
from steps.protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from steps.target_db import connect

SAMPLE_SQL = """
    SELECT owner_api_key_hash AS hash, min(owner_api_key) AS key,
           array_agg(id::text) FILTER (WHERE kind = 'session') AS session_ids
    FROM (SELECT id::text AS id, owner_api_key, owner_api_key_hash, 'session' AS kind
          FROM sessions WHERE owner_api_key IS NOT NULL
          UNION ALL
          SELECT id, owner_api_key, owner_api_key_hash, 'assistant'
          FROM assistants WHERE owner_api_key IS NOT NULL) owned
    GROUP BY owner_api_key_hash ORDER BY owner_api_key_hash LIMIT $1
"""


async def _probe(http: aiohttp.ClientSession, settings: Settings, key: str) -> tuple[int, Any]:
    url = settings.api_base_url.rstrip("/") + "/api/v1/sessions"
    async with http.get(url, headers={"X-API-Key": key}) as answer:
        try:
            return answer.status, await answer.json(content_type=None)
        except ValueError:
            return answer.status, None


async def probe_keys(settings: Settings, emit: OutputSink) -> dict[str, Any]:
    async with connect(settings.target_database_url.get_secret_value()) as conn:
        sample = await conn.fetch(SAMPLE_SQL, settings.verify_sample_size)
    passed: list[str] = []
    failed: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        for row in sample:
            prefix = row["hash"][:8]
            status, body = await _probe(http, settings, row["key"])
            seen = {s.get("id") for s in (body or {}).get("sessions", [])} if status == 200 \
                else set()
            expected = set(row["session_ids"] or [])
            if status == 200 and seen == expected:
                passed.append(prefix)
                emit(f"client {prefix}: 200 with its {len(seen)} sessions")
            else:
                failed.append(prefix)
                emit(f"client {prefix}: answered {status}, {len(seen)} of {len(expected)} "
                     "own sessions")
        bogus_status, _ = await _probe(http, settings, str(uuid.uuid4()))
    emit(f"random key: answered {bogus_status}")
    return {"sampled": len(sample), "passed": passed, "failed": failed,
            "bogus_key_status": bogus_status}


async def count_log_patterns(
    settings: Settings, since: datetime | None, emit: OutputSink
) -> dict[str, Any]:
    if settings.restart_strategy is RestartStrategy.COMMAND:
        return {"log_pattern_counts": None, "logs": "not read (restart strategy is command)"}
    counts = dict.fromkeys(settings.verify_log_patterns, 0)
    async with docker_engine(settings) as engine:
        containers = await engine.find()
        for container in containers:
            start = since or datetime.fromisoformat(container.started_at[:26].rstrip("Z"))
            for line in await engine.logs_since(container.id, start):
                for pattern in counts:
                    counts[pattern] += pattern in line
    for pattern, count in counts.items():
        emit(f"log lines with {pattern!r} since the restart: {count}")
    return {"log_pattern_counts": counts, "containers": [c.name for c in containers]}


class VerifyStep:
    name = StepName.VERIFY

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        return Plan(
            step=self.name,
            summary=f"GET {s.api_base_url}/api/v1/sessions with {s.verify_sample_size} clients' "
                    "new keys (expect 200) and a random key (expect 401)",
            facts={"api": s.api_base_url, "sample": s.verify_sample_size,
                   "patterns": list(s.verify_log_patterns)},
            details=(
                f"count {', '.join(s.verify_log_patterns)} in the api logs since the restart",
            ),
        )

    async def check(self, ctx: StepContext) -> CheckResult:
        """Never 'already done': verifying changes nothing, so an approved verification runs,
        and after a crash it is simply run again (its probes are the evidence)."""
        return CheckResult(False, "verification is read-only and is always run when approved")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        facts = await probe_keys(s, emit)
        restarted = ctx.earlier_facts.get(StepName.RESTART, {}).get("restarted_at")
        since = datetime.fromisoformat(restarted) if restarted else None
        facts.update(await count_log_patterns(s, since, emit))
        problems = []
        if facts["sampled"] == 0:
            problems.append("no client has a new key to try")
        if facts["failed"]:
            problems.append(f"{len(facts['failed'])} of {facts['sampled']} new keys did not work "
                            f"({', '.join(facts['failed'])})")
        if facts["bogus_key_status"] != 401:
            problems.append(f"a random key answered {facts['bogus_key_status']}, not 401")
        if problems:
            raise StepError("verification failed: " + "; ".join(problems))
        return Outcome(summary=f"{len(facts['passed'])}/{facts['sampled']} new keys work; "
                               "random key refused (401)", facts=facts)
