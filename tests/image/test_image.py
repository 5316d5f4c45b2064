"""The image as shipped: it migrates, passes its preflight against real services, and serves
Slack over HTTP with its own health check — each a real container of the real image."""

from __future__ import annotations

import re
import time
from pathlib import Path

import aiohttp
import pytest

from bot.rehearsal.postgres import free_port
from tests.fixtures.sandbox import SandboxSeed
from tests.image.conftest import detached, docker, env_options, healthy, poll
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.requests import sign, slash_command

pytestmark = [pytest.mark.docker, pytest.mark.image]

SECRET = "image-test-signing-secret"


async def test_image_ships_its_tools_and_runs_as_a_user(bot_image: str) -> None:
    shown = await docker("run", "--rm", "--entrypoint", "sh", bot_image, "-c",
                         "id -u; python3 --version; pg_dump --version; git --version")
    assert shown.code == 0, shown.output
    uid, python, pg_dump, git = shown.output.strip().splitlines()[-4:]
    assert uid == "10001"
    assert python.startswith("Python 3.13")
    assert "pg_dump (PostgreSQL) 17." in pg_dump and git.startswith("git version")
    volumes = await docker("image", "inspect", "--format", "{{json .Config.Volumes}}", bot_image)
    assert "/var/lib/rollback-bot/backups" in volumes.output
    assert "/var/lib/rollback-bot/outbox" in volumes.output


async def test_migrate_then_check_is_ready_against_the_test_services(
    bot_image: str, empty_db_url: str, target_db_url: str, sandbox_seed: SandboxSeed,
    fake_slack: FakeSlack, api_health: str,
) -> None:
    env = env_options(
        DATABASE_URL=empty_db_url, TARGET_DATABASE_URL=target_db_url,
        SLACK_BOT_TOKEN="xoxb-image-test", SLACK_API_URL=fake_slack.url,
        RESTART_STRATEGY="command", RESTART_COMMAND="true", MAILER="outbox",
        CLIENT_DIRECTORY="/etc/rollback-bot/clients.csv", API_BASE_URL=api_health)
    mount = ("-v", f"{sandbox_seed.directory_csv}:/etc/rollback-bot/clients.csv:ro")
    run = ("run", "--rm", "--network", "host", *env, *mount, bot_image)

    migrated = await docker(*run, "migrate")
    assert migrated.code == 0, migrated.output
    assert "bot database at revision" in migrated.output

    checked = await docker(*run, "check")
    assert checked.code == 0, checked.output
    lines = checked.output.splitlines()
    assert "Ready: nothing here would stop a rollback." in lines
    for name in ("slack", "bot database", "target database", "pg_dump", "backup dir",
                 "key work table", "outbox", "client directory", "api"):
        assert any(line.startswith(f"ok      {name}:") for line in lines), (name, lines)
    pg_dump = next(line for line in lines if line.startswith("ok      pg_dump:"))
    assert "/usr/lib/postgresql/17/bin/pg_dump version 17" in pg_dump
    assert "/var/lib/rollback-bot/backups" in checked.output
    assert fake_slack.calls_to("auth.test"), "the preflight asked the (fake) Slack"


async def test_serve_http_answers_a_signed_help_command_and_reports_healthy(
    bot_image: str, bot_db_url: str, fake_slack: FakeSlack, tmp_path: Path,
) -> None:
    port = free_port()
    env = env_options(
        DATABASE_URL=bot_db_url, SLACK_BOT_TOKEN="xoxb-image-test",
        SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=fake_slack.url,
        APPROVER_USER_IDS="U_ALICE,U_BOB")
    # The image's own HEALTHCHECK, probed every half second rather than every 30 s.
    health = ("--health-interval", "500ms", "--health-start-period", "60s")
    async with detached(bot_image, "serve", "--http", "--host", "127.0.0.1", "--port",
                        str(port), options=(*env, *health)) as bot:
        await poll(lambda: healthy(bot), 90, "the container reported healthy")
        body = slash_command("help", "U_ALICE", "C_ONCALL", "oncall-engineering")
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/slack/events"
            async with http.post(url, data=body, headers=sign(body, SECRET)) as answer:
                assert answer.status == 200
                assert "/rollback-phase3" in await answer.text()  # help is the ack itself
            forged = sign(body, "not-the-secret")
            async with http.post(url, data=body, headers=forged) as answer:
                assert answer.status == 401
                assert "/rollback-phase3" not in await answer.text(), "the forged one answered"

        # `docker stop` sends the image's STOPSIGNAL (SIGINT): serve ends at once, not at the
        # SIGKILL 30 s later that a PID 1 ignoring SIGTERM would wait for.
        started = time.monotonic()
        stopped = await docker("stop", "-t", "30", bot.name, within=60)
        assert stopped.code == 0, stopped.output
        assert time.monotonic() - started < 15, "serve ignored the stop signal"
        code = await docker("inspect", "--format", "{{.State.ExitCode}}", bot.name)
        assert code.output.strip() in ("0", "130"), await bot.logs()


async def test_a_sandbox_rehearsal_runs_all_six_steps_inside_the_image(
    bot_image: str, pg_admin_url: str,
) -> None:
    """The whole rollback in the container: pg_dump 17, the venv's alembic, git, the outbox."""
    rehearsed = await docker(
        "run", "--rm", "--network", "host", "-e", f"DATABASE_URL={pg_admin_url}", bot_image,
        "rehearse", "--sandbox", "--no-docker", "--approver", "alice", "--approver", "bob",
        "--initiator", "carol", "--clients", "5", "--dir", "/tmp/rehearsal", within=300)
    assert rehearsed.code == 0, rehearsed.output[-4000:]
    assert "server PostgreSQL" in rehearsed.output and "pg_dump 17" in rehearsed.output
    for step in ("1/6 Back up the database", "2/6 Alembic downgrade to Phase 2",
                 "3/6 Restore Phase 2 code and restart api", "4/6 Generate one new API key",
                 "5/6 Email each client its new key", "6/6 Verify authentication and logs"):
        assert any(step in line and "succeeded" in line
                   for line in rehearsed.output.splitlines()), step
    assert "random key refused (401)" in rehearsed.output
    assert "outbox:     /tmp/rehearsal/outbox (4 emails)" in rehearsed.output
    # The picture is drawn in the image too (Pillow and its own font in the venv).
    assert re.search(r"picture:    /tmp/rehearsal/timeline-[0-9a-f]{8}\.png", rehearsed.output)
