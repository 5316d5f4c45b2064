"""Step 6: the new keys work, a random key does not, and the api's logs since the restart.

A random sample of clients' new keys is read from the target and kept in memory only for the
probes (`steps.key_probes`, shared with step 5's canary): output and facts name clients by hash
prefix, never by key, and an answer is shown by its status and error code only — its body may
echo the key or hold other clients' rows. With `KEY_MODEL=service` the sample is the door
key's client(s) only, as step 5 mails no other key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.domain.step_protocol import CheckResult, Outcome, OutputSink, Plan, StepContext, StepError
from bot.domain.steps import StepName
from bot.settings import RestartStrategy, Settings
from steps.containers import docker_engine, selector
from steps.key_probes import probe_sample, read_sample, sessions_url
from steps.service_key import mailable, service_mode


async def probe_keys(ctx: StepContext, emit: OutputSink) -> dict[str, Any]:
    s = ctx.settings
    sample, owned = await read_sample(s, await _mailed_new_hashes(ctx))
    report = await probe_sample(s, sample, owned, emit)
    return {"sampled": report.sampled, "passed": report.passed, "failed": list(report.failed),
            "bogus_key_status": report.random_key.status}


async def _mailed_new_hashes(ctx: StepContext) -> list[str] | None:
    """KEY_MODEL=service: only the door key's client(s), the one key step 5 mails (the other
    hashes' keys are refused at the door by design). Otherwise None: any client with a key."""
    if not service_mode(ctx.settings):
        return None
    mapping = await ctx.rotations.mapping(ctx.rotation_id)
    if not mapping:
        return None
    door, _ = mailable(ctx.settings, mapping)
    return sorted(set(door.values()))


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
        url = sessions_url(s)
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
        facts = await probe_keys(ctx, emit)
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
