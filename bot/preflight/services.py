"""The services around the target in `check`: Slack, the bot's own database, the restart
(Docker or a command) and the api. Container selection is step 3's own (`find_api_containers`).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil

import aiodocker
import aiohttp

from bot.domain.step_protocol import StepError
from bot.preflight.lines import TIMEOUT, CheckLine, short
from bot.settings import RestartStrategy, Settings
from bot.slack.people import usergroup_check
from bot.urls import redacted
from steps.containers import find_api_containers, selector


async def check_slack(settings: Settings) -> CheckLine | None:
    if settings.slack_bot_token is None:
        return None  # the terminal front needs no Slack
    url = settings.slack_api_url.rstrip("/") + "/auth.test"
    token = settings.slack_bot_token.get_secret_value()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http, \
                http.post(url, headers={"Authorization": f"Bearer {token}"}) as answer:
            body = await answer.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return CheckLine("slack", False, f"{url} unreachable ({type(exc).__name__})",
                         "check SLACK_API_URL and the network to Slack; use `rollback-bot "
                         "rehearse --real` from a terminal while Slack is down")
    if not body.get("ok"):
        return CheckLine("slack", False, f"auth.test refused the token: {body.get('error')}",
                         "reinstall the app and copy the xoxb- token into SLACK_BOT_TOKEN")
    return CheckLine("slack", True, f"token valid for {body.get('team')} as {body.get('user')}")


async def check_approvers(settings: Settings) -> CheckLine | None:
    """APPROVER_USERGROUP_ID can be read (else every command and click is refused); without
    a group, the target's approvers by id leave two besides any initiator (the two-person rule,
    counted on this target's own list)."""
    found = await usergroup_check(settings)
    if found is None:
        return _approvers_by_id(settings)
    ok, detail, fix = found
    return CheckLine("approvers", ok, detail, fix)


def _approvers_by_id(settings: Settings) -> CheckLine | None:
    from bot.domain.approvals import APPROVALS_NEEDED

    ids = settings.approver_user_ids
    if not ids or settings.approver_usergroup_id:
        return None  # none: a sandbox rehearsal's names; a group: asked of Slack above
    needed = APPROVALS_NEEDED + (0 if settings.allow_self_approval else 1)
    where = "APPROVER_USER_IDS" if settings.target_name == "default" else \
        f"{settings.target_name.upper()}__APPROVER_USER_IDS (or APPROVER_USER_IDS)"
    if len(ids) >= needed:
        return CheckLine("approvers", True, f"{len(ids)} engineers by id ({where})")
    return CheckLine("approvers", False,
                     f"only {len(ids)} engineers by id ({where}): every step needs "
                     f"{APPROVALS_NEEDED} approvals besides the initiator, so every start in "
                     "Slack is refused", f"list at least {needed} engineers in {where}",
                     blocking=False)


async def check_bot_db(settings: Settings) -> CheckLine:
    if settings.database_url is None:
        return CheckLine("bot database", False, "DATABASE_URL is not set",
                         "set DATABASE_URL to a PostgreSQL database for the bot's own state")
    url = settings.database_url.get_secret_value()
    from bot.db.migrate import current_revision, head_revision

    try:
        async with asyncio.timeout(TIMEOUT * 2):
            current = await current_revision(url)
    except Exception as exc:
        return CheckLine("bot database", False, f"{redacted(url)} unreachable: {short(exc)}",
                         "start the database or correct DATABASE_URL")
    head = head_revision()
    if current != head:
        return CheckLine("bot database", False,
                         f"schema at revision {current or 'none'}, expected {head}",
                         "run `rollback-bot migrate`")
    return CheckLine("bot database", True, f"{redacted(url)} at revision {head}")


async def check_restart(settings: Settings) -> CheckLine:
    if settings.restart_strategy is RestartStrategy.COMMAND:
        words = shlex.split(settings.restart_command) if settings.restart_command else []
        if not words:
            return CheckLine("restart", False, "RESTART_STRATEGY=command but RESTART_COMMAND "
                             "is empty", "set RESTART_COMMAND (or RESTART_STRATEGY=docker)")
        if shutil.which(words[0]) is None:
            return CheckLine("restart", False, f"restart command {words[0]!r} not found",
                             "fix RESTART_COMMAND's program path")
        return CheckLine("restart", True, f"command {words[0]} ({len(words) - 1} arguments)")
    described = selector(settings)[1]
    host = os.environ.get("DOCKER_HOST", "the default socket")
    try:
        async with asyncio.timeout(TIMEOUT):
            found = await find_api_containers(settings)
    except (StepError, aiodocker.DockerError, OSError, TimeoutError, ValueError) as exc:
        return CheckLine("docker", False, f"engine at {host} unreachable: {short(exc)}",
                         "start Docker or set DOCKER_HOST (or RESTART_STRATEGY=command)")
    if not found:
        return CheckLine("docker", False, f"no api container matches {described} at {host}",
                         "set API_COMPOSE_PROJECT/API_COMPOSE_SERVICE or API_CONTAINER_NAME")
    running = [c for c in found if c.status == "running"]
    names = ", ".join(c.name for c in found)
    if not running:
        return CheckLine("docker", False, f"matched {names} but none is running",
                         "start the api container", blocking=False)
    return CheckLine("docker", True, f"{len(running)} running api container(s) match "
                     f"{described}: {names}")


async def check_api(settings: Settings) -> CheckLine:
    url = settings.api_base_url.rstrip("/") + settings.api_health_path
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http, \
                http.get(url) as answer:
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return CheckLine("api", False, f"{url} unreachable ({short(exc)})",
                         "check API_BASE_URL and API_HEALTH_PATH; the verify step calls it")
    if status >= 500:
        return CheckLine("api", False, f"{url} answered {status}", "look at the api's logs",
                         blocking=False)
    return CheckLine("api", True, f"{url} answered {status}")
