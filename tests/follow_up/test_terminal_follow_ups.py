"""The follow-through from a terminal: `rollback-bot follow-ups` and `escalate` on a real bot
database, and what `check` says about paging."""

from __future__ import annotations

import base64
import io
import re
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.session import make_engine, make_sessionmaker
from bot.domain.totp import code_at, decode_secret, time_step
from bot.engine.engine import Engine
from bot.preflight import check_paging
from bot.settings import Settings
from bot.terminal.follow_ups import escalate, follow_ups
from tests.engine.fake_steps import as_steps, scripted_steps
from tests.engine.test_engine_flow import start
from tests.follow_up.test_follow_through import approve_step
from tests.pagerwire.fake_events_api import FakeEventsApi
from tests.pagerwire.fixtures import ROUTING_KEY

SECRETS = {"U_DAVE": base64.b32encode(b"dave's secret").decode(),
           "U_ERIN": base64.b32encode(b"erin's secret").decode()}


def settings_for(url: str, **overrides: Any) -> Settings:
    return Settings(_env_file=None, database_url=url,  # type: ignore[call-arg]
                    break_glass_totp_secrets=SECRETS, **overrides)


class Authenticators:
    """Dave and Erin type their own code at the prompt; a later use the next step's code (a
    code spent once is refused)."""

    def __init__(self) -> None:
        self.uses: dict[str, int] = {}

    def __call__(self, prompt: str) -> str:
        user = prompt.split(",")[0].strip()
        offset = self.uses.get(user, 0)
        self.uses[user] = offset + 1
        return code_at(decode_secret(SECRETS[user]), time_step(time.time()) + offset)


async def finished_run(url: str) -> str:
    db = make_engine(url)
    sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(db)
    engine = Engine(sessions, settings_for(url), as_steps(scripted_steps()))
    try:
        run_id = await start(engine)
        from bot.domain.steps import STEP_ORDER

        for step in STEP_ORDER:
            await approve_step(engine, run_id, step)
        return run_id
    finally:
        await engine.shutdown()
        await db.dispose()


async def test_follow_ups_are_listed_owned_and_closed_from_the_terminal(bot_db_url: str) -> None:
    out = io.StringIO()
    assert await follow_ups(settings_for(bot_db_url), "list", None, None, out) == 1
    assert "No rollback" in out.getvalue()
    await finished_run(bot_db_url)
    out = io.StringIO()
    codes = Authenticators()
    assert await follow_ups(settings_for(bot_db_url), "own", "1", "U_DAVE", out, codes) == 0
    assert await follow_ups(settings_for(bot_db_url), "done", "root_cause", "U_ERIN", out,
                            codes) == 0
    text = out.getvalue()
    assert "1/5 done, 4 open" in text
    table = text.splitlines()[-7:]  # the listing after the close: header, rule, five items
    assert table[0].split() == ["#", "action", "status", "owner", "owned", "(UTC)", "done",
                                "by", "done", "(UTC)"]
    first = table[2]
    assert first.lstrip().startswith("1  Root cause analysis: identify why Phase 3 failed")
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d"
    assert re.search(rf"\s{{2,}}done\s+U_DAVE\s+{when}\s+U_ERIN\s+{when}$", first), first
    assert re.search(r"^  2  Fix the issues.*\s{2,}open$", table[3]), table[3]
    # The columns line up: each item's status starts where the header's does.
    column = table[0].index("status")
    assert all(row[column:column + 4] in ("done", "open") for row in table[2:])
    again = io.StringIO()
    assert await follow_ups(settings_for(bot_db_url), "done", "1", "U_DAVE", again,
                            codes) == 1
    assert "already done by U_ERIN" in again.getvalue()


async def test_escalating_with_no_active_run_is_refused(
    bot_db_url: str, fake_pagerduty: FakeEventsApi,
) -> None:
    await finished_run(bot_db_url)
    out = io.StringIO()
    settings = settings_for(bot_db_url, pagerduty_routing_key=ROUTING_KEY,
                            pagerduty_events_url=fake_pagerduty.url)
    assert await escalate(settings, "help", "U_DAVE", out, Authenticators()) == 1
    assert "no active rollback" in out.getvalue()
    assert fake_pagerduty.requests == []


def test_check_says_when_paging_is_off_or_misconfigured() -> None:
    off = check_paging(Settings(_env_file=None))  # type: ignore[call-arg]
    assert not off.ok and not off.blocking and "off" in off.detail
    bad = check_paging(Settings(_env_file=None, pagerduty_routing_key="short"))  # type: ignore[call-arg]
    assert not bad.ok and "32 characters" in bad.detail and "short" not in bad.text()
    on = check_paging(Settings(_env_file=None, pagerduty_routing_key=ROUTING_KEY,  # type: ignore[call-arg]
                               escalation_usergroup_id="S_LEADS"))
    assert on.ok and "<!subteam^S_LEADS>" in on.detail and ROUTING_KEY not in on.text()
