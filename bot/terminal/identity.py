"""Who is at the terminal: break-glass engineers prove themselves with their own TOTP code.

`BREAK_GLASS_TOTP_SECRETS` maps each Slack user id to a base32 secret only that engineer's
authenticator holds. Naming an approver is not enough: the code typed must be theirs, for now
(one step of drift), and newer than any code of theirs accepted before (RFC 6238 5.2: a code
is never accepted at or before the time step of one already accepted, so a newer code spends
the older ones still within the drift too). Accepted codes are remembered where every process
sees them (the incident log: the entry of what a code did records the engineer and the code's
time step), and the check and
the use are serialised per engineer by a PostgreSQL advisory lock, so neither a second prompt
nor a second process can replay it. One login naming two approvers therefore needs both
engineers' codes: two people.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TextIO

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.events import Source
from bot.domain.totp import matching_step
from bot.engine.answers import Actor

AskCode = Callable[[str], str]
Clock = Callable[[], float]

# A log entry that spent a code of the engineer's of this time step or a later one.
USED_STEP = text("""
    SELECT 1 FROM incident_events
    WHERE actor = :user AND source = 'terminal' AND data ? 'totp_step'
      AND (data->>'totp_step')::bigint >= :step
    LIMIT 1""")


class IdentityRefused(Exception):
    """The person at the terminal did not prove they are who they named; says why."""


def read_code(prompt: str) -> str:
    """A code typed at the terminal, not echoed; from a pipe, one line (scripts and tests)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    print(prompt, end="", file=sys.stdout, flush=True)
    return sys.stdin.readline()


class TotpIdentity:
    def __init__(self, secrets: Mapping[str, SecretStr], sessions: async_sessionmaker[AsyncSession],
                 out: TextIO, ask_code: AskCode = read_code, clock: Clock = time.time) -> None:
        self.secrets = secrets
        self.sessions = sessions
        self.out = out
        self.ask_code = ask_code
        self.clock = clock

    def require_secrets_for(self, user_ids: list[str]) -> None:
        if not self.secrets:
            raise IdentityRefused("break-glass needs BREAK_GLASS_TOTP_SECRETS: every engineer "
                                  "acting from a terminal proves who they are with their own "
                                  "TOTP code")
        missing = [user for user in user_ids if user not in self.secrets]
        if missing:
            raise IdentityRefused(f"no TOTP secret for {', '.join(missing)} "
                                  "(BREAK_GLASS_TOTP_SECRETS): they cannot act from a terminal")

    @asynccontextmanager
    async def proven(self, user_id: str, what: str) -> AsyncIterator[Actor]:
        """Ask `user_id` for their code; yield their actor carrying the code's time step while
        nobody else may spend a code of theirs. What the caller records with the actor (its
        `proof()`) spends the code."""
        self.require_secrets_for([user_id])
        code = await asyncio.to_thread(self.ask_code, f"  {user_id}, your code ({what}): ")
        step = matching_step(self.secrets[user_id].get_secret_value(), code, self.clock())
        if step is None:
            raise IdentityRefused(f"wrong code for {user_id}")
        async with self.sessions() as session:
            lock = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            key = {"key": f"rollback-bot totp {user_id}"}
            await lock.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), key)
            try:
                used = await lock.execute(USED_STEP, {"user": user_id, "step": step})
                if used.first() is not None:
                    raise IdentityRefused(f"that code of {user_id} was already used (or a "
                                          "newer one was): wait for the next one")
                yield Actor(user_id, user_id, Source.TERMINAL, True, totp_step=step)
            finally:
                await lock.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)
