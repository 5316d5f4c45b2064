"""Steps that touch nothing outside: they let engine tests drive every path on a real bot DB."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

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
