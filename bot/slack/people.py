"""Who counts as an authorised engineer, and which channel is the rollback channel."""

from __future__ import annotations

import time

from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings

GROUP_CACHE_SECONDS = 60.0


class Engineers:
    """`APPROVER_USER_IDS` plus the members of `APPROVER_USERGROUP_ID` (cached for a minute)."""

    def __init__(self, client: AsyncWebClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._group: frozenset[str] = frozenset()
        self._group_at = float("-inf")
        self._names: dict[str, str] = {}

    async def authorised(self) -> frozenset[str]:
        ids = frozenset(self.settings.approver_user_ids)
        group = self.settings.approver_usergroup_id
        if group:
            if time.monotonic() - self._group_at > GROUP_CACHE_SECONDS:
                answer = await self.client.usergroups_users_list(usergroup=group)
                self._group = frozenset(answer.get("users") or [])
                self._group_at = time.monotonic()
            ids |= self._group
        return ids

    async def is_authorised(self, user_id: str) -> bool:
        return user_id in await self.authorised()


def is_rollback_channel(settings: Settings, channel_id: str, channel_name: str) -> bool:
    wanted = settings.rollback_channel.strip().lstrip("#")
    return wanted in (channel_id, channel_name)
