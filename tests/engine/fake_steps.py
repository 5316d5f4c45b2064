"""Steps that touch nothing outside: they let engine tests drive every path on a real bot DB."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from bot.domain.ledgers import NotificationRecord
from bot.domain.ledgers import NotificationStatus as Sent
from bot.domain.resend import UNCONFIRMED
from bot.domain.step_protocol import (
    CheckResult,
    Outcome,
    OutputSink,
    Plan,
    Step,
    StepContext,
    StepError,
)
from bot.domain.steps import STEP_ORDER, StepName


@dataclass
class ScriptedStep:
    """A step whose plan, check and run results a test sets and whose runs it counts."""

    name: StepName
    plan_facts: dict[str, object] = field(default_factory=dict)
    done: bool = False
    fail_times: int = 0
    lines: int = 3
    hold: asyncio.Event | None = None  # run waits for this when set
    outcome_facts: dict[str, object] = field(default_factory=dict)  # added to run()'s facts
    runs: int = 0
    entered: asyncio.Event = field(default_factory=asyncio.Event)  # set when run() begins
    running_now: int = 0  # copies of run() in progress (over every replica of a test)
    stopped: int = 0  # copies of run() cancelled while in progress
    running_at_check: list[int] = field(default_factory=list)  # running_now at each check
    plans: int = 0  # how often the plan was computed (each one queries a live target)

    async def plan(self, ctx: StepContext) -> Plan:
        self.plans += 1
        return Plan(step=self.name, summary=f"would {self.name.value}",
                    facts={"target": "sandbox", **self.plan_facts})

    async def check(self, ctx: StepContext) -> CheckResult:
        self.running_at_check.append(self.running_now)
        return CheckResult(self.done, "effect in place" if self.done else "not yet")

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        self.runs += 1
        self.entered.set()
        for i in range(self.lines):
            emit(f"{self.name.value} line {i + 1}")
        if self.hold is not None:
            self.running_now += 1
            try:
                await self.hold.wait()
            except asyncio.CancelledError:
                self.stopped += 1
                raise
            finally:
                self.running_now -= 1
        if self.fail_times > 0:
            self.fail_times -= 1
            raise StepError(f"{self.name.value} failed on purpose")
        self.done = True
        return Outcome(summary=f"{self.name.value} done",
                       facts={"runs": self.runs, **self.outcome_facts})


def scripted_steps() -> dict[StepName, ScriptedStep]:
    return {name: ScriptedStep(name) for name in STEP_ORDER}


def as_steps(scripted: Mapping[StepName, ScriptedStep]) -> Mapping[StepName, Step]:
    return dict(scripted)


def client_hash(name: str) -> str:
    """A client's old key hash, as the ledgers key it (64 hex characters)."""
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass
class ScriptedEmailStep(ScriptedStep):
    """Step 5 over the run's real notification ledger (as the engine hands it, fenced): each of
    `clients` is recorded sent, except `in_flight`, left `sending` as the bot dying during DATA
    leaves a client (this one run stands for the attempt that died and the Retry after it,
    which never re-sends an uncertain client); a failing run (`fail_times`) fails after
    recording them. `resend` records each approved client sent
    again — or failed, `resend_fail_times` times — and keeps what it was asked to send."""

    name: StepName = StepName.EMAIL_CLIENTS
    clients: tuple[str, ...] = ()
    in_flight: tuple[str, ...] = ()
    resend_fail_times: int = 0
    resent: list[tuple[str, ...]] = field(default_factory=list)  # each resend's clients

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        ledger = ctx.notifications
        known = await ledger.records(ctx.rotation_id)
        await ledger.save(ctx.rotation_id, *(
            NotificationRecord(c, Sent.SENDING if c in self.in_flight else Sent.SENT,
                               email=f"{c[:8]}@clients.example", attempts=1)
            for c in self.clients if c not in known))
        outcome = await super().run(ctx, emit)  # fails here `fail_times` times, mail recorded
        uncertain = [c[:8] for c, r in sorted((await ledger.records(ctx.rotation_id)).items())
                     if r.status is Sent.SENDING]
        return Outcome(summary=outcome.summary, facts={**outcome.facts, "uncertain": uncertain})

    async def resend(self, ctx: StepContext, emit: OutputSink, clients: Sequence[str]
                     ) -> Outcome:
        self.resent.append(tuple(clients))
        records = await ctx.notifications.records(ctx.rotation_id)
        todo = [records[c] for c in clients
                if c in records and records[c].status in UNCONFIRMED]
        failing = self.resend_fail_times > 0
        if failing:
            self.resend_fail_times -= 1
        status = Sent.FAILED if failing else Sent.SENT
        await ctx.notifications.save(ctx.rotation_id, *(
            replace(r, status=status, attempts=r.attempts + 1) for r in todo))
        for record in todo:
            emit(f"resent to {record.client_hash[:8]}: {status.value}")
        if failing:
            raise StepError(f"{len(todo)} resends failed on purpose")
        return Outcome(summary=f"{len(todo)} of {len(todo)} unconfirmed clients emailed again",
                       facts={"resent": [r.client_hash[:8] for r in todo]})
