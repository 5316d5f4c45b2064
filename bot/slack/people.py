"""Who is acting, whether they are an authorised engineer, and which channel is the rollback's.

The acting user is resolved once per request, by `person_middleware`, into `context["person"]`;
listeners never read user fields from the body. Whether the person is authorised may need
`usergroups.users.list`, a Web API call, and Slack's 3 seconds include middleware time, so the
middleware does not wait for it: `Person.actor()` looks it up (at most once per request) when a
listener's handed-over work first asks.

A lookup that fails (a wrong `APPROVER_USERGROUP_ID`, the `usergroups:read` scope missing, Slack
down) is `PeopleLookupFailed`, whose message says what to fix: the front shows it to the person
as a refusal, and `check` shows it as a line (`usergroup_check`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.events import Source
from bot.engine.engine import Actor
from bot.settings import Settings

GROUP_CACHE_SECONDS = 60.0
_FIXES = {
    "missing_scope": "the app lacks the usergroups:read scope: add it to the app's bot scopes "
                     "and reinstall the app",
    "no_such_subteam": "APPROVER_USERGROUP_ID is not a user group of this workspace: use the "
                       "group's id (S…), shown in the group's profile",
    "subteam_not_found": "APPROVER_USERGROUP_ID is not a user group of this workspace: use the "
                         "group's id (S…), shown in the group's profile",
    "invalid_auth": "SLACK_BOT_TOKEN is not valid for this workspace",
    "token_revoked": "SLACK_BOT_TOKEN was revoked: reinstall the app and set the new token",
}


class PeopleLookupFailed(Exception):
    """Who may approve could not be read from Slack; the message says what to fix."""


class Engineers:
    """`APPROVER_USER_IDS` plus the members of `APPROVER_USERGROUP_ID` (cached for a minute),
    of one target: with several, each target has its own (`PRODUCTION__APPROVER_USER_IDS`)."""

    def __init__(self, client: AsyncWebClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._group: frozenset[str] = frozenset()
        self._group_at = float("-inf")

    async def authorised(self) -> frozenset[str]:
        ids = frozenset(self.settings.approver_user_ids)
        group = self.settings.approver_usergroup_id
        if group:
            if time.monotonic() - self._group_at > GROUP_CACHE_SECONDS:
                self._group = await self._members(group)
                self._group_at = time.monotonic()
            ids |= self._group
        return ids

    async def _members(self, group: str) -> frozenset[str]:
        try:
            answer = await self.client.usergroups_users_list(usergroup=group)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "error"))
            fix = _FIXES.get(error, "try again; `/rollback-phase3 check` tells more")
            raise PeopleLookupFailed(
                f"Slack refused usergroups.users.list for APPROVER_USERGROUP_ID={group} "
                f"(`{error}`): {fix}") from None
        except (OSError, TimeoutError) as exc:
            raise PeopleLookupFailed(
                f"Slack could not be asked who is in APPROVER_USERGROUP_ID={group} "
                f"({type(exc).__name__}); try again in a moment") from None
        return frozenset(answer.get("users") or [])

    async def is_authorised(self, user_id: str) -> bool:
        return user_id in await self.authorised()


@dataclass
class Person:
    """The user a request comes from; `actor()` adds whether they are authorised — on the
    target whose `Engineers` are asked (each target has its own approvers)."""

    user_id: str
    user_name: str
    engineers: Engineers  # the only target's, or the first one's
    _actors: dict[int, asyncio.Future[Actor]] = field(default_factory=dict, repr=False)

    async def actor(self, engineers: Engineers | None = None) -> Actor:
        """Authorisation is looked up once per request and target, however often asked."""
        asked = engineers or self.engineers
        if id(asked) not in self._actors:
            self._actors[id(asked)] = asyncio.ensure_future(self._resolve(asked))
        return await asyncio.shield(self._actors[id(asked)])

    async def _resolve(self, engineers: Engineers) -> Actor:
        authorised = await engineers.is_authorised(self.user_id)
        return Actor(self.user_id, self.user_name, Source.SLACK, authorised)


def person_of(body: dict[str, Any], engineers: Engineers) -> Person | None:
    """The acting user of a slash command (flat fields) or an interaction (`user` object)."""
    user = body.get("user")
    if isinstance(user, dict) and user.get("id"):
        name = user.get("username") or user.get("name") or user["id"]
        return Person(str(user["id"]), str(name), engineers)
    if body.get("user_id"):
        return Person(str(body["user_id"]), str(body.get("user_name") or body["user_id"]),
                      engineers)
    return None


def person_middleware(
    engineers: Engineers,
) -> Callable[[dict[str, Any], dict[str, Any], Callable[[], Awaitable[Any]]], Awaitable[Any]]:
    async def resolve_person(context: dict[str, Any], body: dict[str, Any],
                             next: Callable[[], Awaitable[Any]]) -> Any:
        person = person_of(body, engineers)
        if person is not None:
            context["person"] = person
        return await next()

    return resolve_person


async def usergroup_check(settings: Settings) -> tuple[bool, str, str] | None:
    """For `check`: (ok, what was found, what to fix) about APPROVER_USERGROUP_ID; None when
    there is no group or no Slack to ask."""
    group = settings.approver_usergroup_id
    if not group or settings.slack_bot_token is None:
        return None
    base_url = settings.slack_api_url.rstrip("/") + "/"
    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(),
                            base_url=base_url, timeout=5)
    try:
        members = await Engineers(client, settings)._members(group)
    except PeopleLookupFailed as failed:
        detail, _, fix = str(failed).partition("): ")
        return False, detail + ")", fix
    return True, (f"user group {group} has {len(members)} members, plus "
                  f"{len(settings.approver_user_ids)} engineers by id"), ""


def is_channel_id(value: str) -> bool:
    """Slack's channel ids (`C…`, `G…`) are upper case; channel names are always lower case."""
    return bool(re.fullmatch(r"[CG][A-Z0-9_]{2,}", value))


def is_rollback_channel(settings: Settings, channel_id: str, channel_name: str) -> bool:
    """ROLLBACK_CHANNEL as an id matches that channel only: a channel deleted and created
    again under the old name is another channel. A name (the default) matches by name."""
    wanted = settings.rollback_channel.strip().lstrip("#")
    if is_channel_id(wanted):
        return channel_id == wanted
    return wanted in (channel_id, channel_name)
