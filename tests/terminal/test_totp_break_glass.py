"""Break-glass needs two people: each approver named at a terminal types their own current
TOTP code (BREAK_GLASS_TOTP_SECRETS); a wrong code, a code already used (by this process or
another one) or a name without a secret approves nothing. `escalate --as` and
`follow-ups … --as` are held to the same rule, driven here as the real CLI processes."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_events
from bot.db.session import make_engine, make_sessionmaker
from bot.domain.events import EventKind
from bot.domain.states import RunStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.totp import code_at, decode_secret, time_step
from bot.engine.engine import Engine
from bot.settings import Settings, SettingsError
from bot.slack.blocks import step_message
from bot.terminal.approvals import NamedApprovers, PromptApprovers
from bot.terminal.decisions import FrontError
from bot.terminal.rehearse import BreakGlass, follow_or_start, rehearse_command
from bot.terminal.render import step_heading
from tests.engine.fake_steps import as_steps, scripted_steps
from tests.terminal.test_break_glass import TARGET, parse, start_in_slack

BIN = Path(sys.executable).parent / "rollback-bot"
SECRETS = {"U_ALICE": base64.b32encode(b"alice's own secret!!").decode(),
           "U_BOB": base64.b32encode(b"bob's own secret!!!!").decode(),
           "U_CAROL": base64.b32encode(b"carol's own secret!!").decode()}
SECRETS_SETTING = ",".join(f"{user}={secret}" for user, secret in SECRETS.items())


def code_of(user: str, offset_steps: int = 0) -> str:
    return code_at(decode_secret(SECRETS[user]), time_step(time.time()) + offset_steps)


def settings_for(url: str | None = None) -> Settings:
    return Settings(_env_file=None, approver_user_ids="U_ALICE,U_BOB,U_CAROL",  # type: ignore[call-arg]
                    break_glass_totp_secrets=SECRETS_SETTING, step_timeout_seconds=30,
                    database_url=url)


class Keyboard:
    """The people at the terminal: Bob and Carol take turns at the name prompt; at the code
    prompt each types what the script says ("own": their current code, "other": the other
    one's, "replay": their code accepted last time). Each code prompt is 16 s after the last
    on the clock the identity check reads (from 1 s into a time step), so one engineer's
    prompts are always in different steps and a replay still falls within the drift."""

    def __init__(self, script: list[str]) -> None:
        self.script = deque(script)
        self.turn = 0
        self.now = time_step(time.time()) * 30 + 1.0
        self.last: dict[str, str] = {}
        self.code_prompts: list[str] = []

    def clock(self) -> float:
        return self.now

    def name(self, _prompt: str) -> str:
        self.turn += 1
        return ("U_BOB", "U_CAROL")[self.turn % 2 - 1]

    def code(self, prompt: str) -> str:
        self.code_prompts.append(prompt)
        self.now += 16
        user = prompt.split(",")[0].strip()
        other = "U_CAROL" if user == "U_BOB" else "U_BOB"
        what = self.script.popleft()
        if what == "replay":
            return self.last[user]
        code = code_at(decode_secret(SECRETS[other if what == "other" else user]),
                       time_step(self.now))
        if what == "own":
            self.last[user] = code
        return code


async def test_each_approver_types_their_own_code_and_a_code_works_once(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    settings = settings_for()
    engine = Engine(bot_sessionmaker, settings, as_steps(scripted_steps()), replica_id="term")
    # Alice, starting, types Bob's code: nothing starts. Then her own. Step 1: Bob types
    # Carol's code (refused), then his own; Carol hers. Step 2: Bob types his code of step 1
    # again (replayed: refused), then a fresh one. Then fresh codes only.
    keyboard = Keyboard(["other", "own", "other", "own", "own", "replay", "own", "own"]
                        + ["own", "own"] * (len(STEP_ORDER) - 2))
    out = io.StringIO()
    glass = BreakGlass(settings.approver_user_ids, None, settings.break_glass_totp_secrets,
                       keyboard.code, keyboard.clock)
    try:
        with pytest.raises(FrontError, match="start by U_ALICE refused"):
            await follow_or_start(engine, out, PromptApprovers(out, keyboard.name),
                                  "U_ALICE", "slack is down", glass)
        assert await engine.active_run_id() is None, "a wrong code starts nothing"
        view = await follow_or_start(engine, out, PromptApprovers(out, keyboard.name),
                                     "U_ALICE", "slack is down", glass)
    finally:
        await engine.shutdown()
    text = out.getvalue()
    assert view.status is RunStatus.COMPLETED, text
    assert "wrong code for U_BOB" in text
    assert "that code of U_BOB was already used" in text
    assert "wrong code for U_ALICE" in text
    assert len(keyboard.code_prompts) == 2 * len(STEP_ORDER) + 4
    assert keyboard.code_prompts[:2] == ["  U_ALICE, your code (start the rollback): "] * 2
    assert all(prompt.startswith(("  U_BOB, your code", "  U_CAROL, your code"))
               for prompt in keyboard.code_prompts[2:])
    async with bot_sessionmaker() as session:
        given = await repo_events.events_of_kind(session, view.run_id, EventKind.APPROVAL_GIVEN)
        started = await repo_events.events_of_kind(session, view.run_id, EventKind.RUN_STARTED)
    assert [(e.actor, e.data["proof"]) for e in started] == [("U_ALICE", "totp")]
    assert len(given) == 2 * len(STEP_ORDER), "every refused code approved nothing"
    assert all(e.source == "terminal" and e.data["proof"] == "totp" for e in given)
    steps_used = [(e.actor, e.data["totp_step"]) for e in given]
    assert len(set(steps_used)) == len(steps_used), "no code counted twice"
    _text, blocks = step_message(view, view.steps[0], view.created_at)
    assert "<@U_BOB> (terminal, TOTP)" in str(blocks) and "<@U_CAROL> (terminal, TOTP)" in \
        str(blocks), "the thread says the approvals were typed at a terminal"
    for secret in SECRETS.values():
        assert secret not in text


async def test_retry_and_abort_at_the_terminal_wait_for_the_operators_code(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Step 1 fails twice: Alice (operating) retries it, then aborts; each only once she typed
    her own code, and the log says so. A wrong code retries nothing."""
    settings = settings_for()
    steps = scripted_steps()
    steps[StepName.BACKUP].fail_times = 2
    engine = Engine(bot_sessionmaker, settings, as_steps(steps), replica_id="term")
    # Alice starts; Bob and Carol approve; step 1 fails: Alice's retry (Carol's code: refused).
    keyboard = Keyboard(["own", "own", "own", "other"])
    out = io.StringIO()
    glass = BreakGlass(settings.approver_user_ids, None, settings.break_glass_totp_secrets,
                       keyboard.code, keyboard.clock)
    try:
        with pytest.raises(FrontError, match=r"retry .* by U_ALICE refused: no valid code"):
            await follow_or_start(engine, out, NamedApprovers(["U_BOB", "U_CAROL"], retries=1),
                                  "U_ALICE", "slack is down", glass)
        run_id = await engine.active_run_id()
        assert run_id is not None
        async with bot_sessionmaker() as session:
            kinds = [e.kind for e in await repo_events.all_events(session, run_id)]
        assert EventKind.RETRY_REQUESTED not in kinds, "a wrong code retries nothing"
        # Again: her retry, two fresh approvals, the second failure, her abort.
        keyboard.script.extend(["own", "own", "own", "own"])
        view = await follow_or_start(engine, out, NamedApprovers(["U_BOB", "U_CAROL"], retries=1),
                                     "U_ALICE", "slack is down", glass)
    finally:
        await engine.shutdown()
    assert view.status is RunStatus.ABORTED, out.getvalue()
    BACKUP = step_heading(StepName.BACKUP)
    assert [p for p in keyboard.code_prompts if p.startswith("  U_ALICE")] == [
        "  U_ALICE, your code (start the rollback): ",
        f"  U_ALICE, your code (retry {BACKUP}): ", f"  U_ALICE, your code (retry {BACKUP}): ",
        f"  U_ALICE, your code (abort at {BACKUP}): "]
    async with bot_sessionmaker() as session:
        acts = [e for e in await repo_events.all_events(session, view.run_id)
                if e.kind in (EventKind.RETRY_REQUESTED, EventKind.RUN_ABORTED)]
    assert [(e.kind, e.actor, e.data.get("proof")) for e in acts] == [
        (EventKind.RETRY_REQUESTED, "U_ALICE", "totp"), (EventKind.RUN_ABORTED, "U_ALICE", "totp")]


def test_real_refuses_approvers_without_a_secret() -> None:
    bare = Settings(_env_file=None, target_database_url=TARGET,  # type: ignore[call-arg]
                    approver_user_ids="U_ALICE,U_BOB,U_CAROL")
    with pytest.raises(SettingsError, match="needs BREAK_GLASS_TOTP_SECRETS"):
        rehearse_command(parse("--real", "--approver", "U_BOB", "--approver", "U_CAROL",
                               "--initiator", "U_ALICE"), bare)
    one = Settings(_env_file=None, target_database_url=TARGET,  # type: ignore[call-arg]
                   approver_user_ids="U_ALICE,U_BOB,U_CAROL",
                   break_glass_totp_secrets=f"U_BOB={SECRETS['U_BOB']}")
    with pytest.raises(SettingsError, match="no TOTP secret for U_ALICE, U_CAROL"):
        rehearse_command(parse("--real", "--approver", "U_BOB", "--approver", "U_CAROL",
                               "--initiator", "U_ALICE"), one)


def cli(url: str, *argv: str, typed: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "DATABASE_URL": url, "BREAK_GLASS_TOTP_SECRETS": SECRETS_SETTING,
           "APPROVER_USER_IDS": "U_ALICE,U_BOB,U_CAROL"}
    return subprocess.run([str(BIN), *argv], env=env, input=typed, capture_output=True,
                          text=True, timeout=60, check=False, cwd="/tmp")


async def slack_run(bot_db_url: str) -> str:
    """A run started in Slack, for the terminal commands to act on; its id."""
    db = make_engine(bot_db_url)
    engine = Engine(make_sessionmaker(db), settings_for(bot_db_url),
                    as_steps(scripted_steps()))
    try:
        return await start_in_slack(engine)
    finally:
        await engine.shutdown()
        await db.dispose()


async def test_escalate_as_someone_needs_their_own_unused_code(bot_db_url: str) -> None:
    run_id = await slack_run(bot_db_url)
    why = ("escalate", "customers", "locked", "out", "--as", "U_BOB")
    wrong = cli(bot_db_url, *why, typed=code_of("U_CAROL") + "\n")
    assert wrong.returncode == 1 and "wrong code for U_BOB" in wrong.stdout
    stranger = cli(bot_db_url, "escalate", "help", "--as", "U_MALLORY", typed="123456\n")
    assert stranger.returncode == 1 and "no TOTP secret for U_MALLORY" in stranger.stdout
    code = code_of("U_BOB")
    first = cli(bot_db_url, *why, typed=code + "\n")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "U_BOB, your code (escalate)" in first.stdout and code not in first.stdout
    again = cli(bot_db_url, *why, typed=code + "\n")  # a second process, the same code
    assert again.returncode == 1 and "already used" in again.stdout
    db = make_engine(bot_db_url)
    try:
        async with make_sessionmaker(db)() as session:
            escalated = await repo_events.events_of_kind(session, run_id,
                                                         EventKind.ESCALATED)
    finally:
        await db.dispose()
    assert [(e.actor, e.source, e.data["proof"]) for e in escalated] == \
        [("U_BOB", "terminal", "totp")], "only the proven escalation is in the log"


async def test_a_code_older_than_one_accepted_is_refused(bot_db_url: str) -> None:
    """RFC 6238 5.2: once a code is accepted, none of its time step or before is. Bob's next
    code (accepted: one step of drift) spends the current one too, unused as it is."""
    await slack_run(bot_db_url)
    newer, older = code_of("U_BOB", 1), code_of("U_BOB")
    why = ("escalate", "customers", "locked", "out", "--as", "U_BOB")
    first = cli(bot_db_url, *why, typed=newer + "\n")
    assert first.returncode == 0, first.stdout + first.stderr
    behind = cli(bot_db_url, *why, typed=older + "\n")
    assert behind.returncode == 1 and "already used" in behind.stdout, behind.stdout


def test_the_secrets_are_masked_wherever_the_redactor_goes() -> None:
    from bot.domain.redaction import Redactor

    redact = Redactor.for_settings(settings_for())
    for secret in SECRETS.values():
        assert secret not in redact(f"configured {secret} and {SECRETS_SETTING}")
    assert "U_BOB" in redact(SECRETS_SETTING), "the user ids are not secret"
