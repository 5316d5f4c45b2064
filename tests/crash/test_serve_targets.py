"""One real `rollback-bot serve --http` process configured with TARGETS serves every usable
target: a target whose settings are incomplete is logged with what is missing and refused by
name in Slack, the others are served side by side; help names them, status answers for each,
and staging and production are started from the same process, each with its own board."""

from __future__ import annotations

import json
from pathlib import Path

from bot.slack.modal import TARGET_ACTION_ID, TARGET_BLOCK_ID
from tests.crash.bot_process import Bot, base_env
from tests.fixtures.postgres import DatabaseFactory
from tests.slack.harness import CHANNEL, CHANNEL_NAME
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.requests import slash_command, view_submission

START = "rollback_start"


def targets_env(base: dict[str, str], staging_url: str, production_url: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k != "TARGET_DATABASE_URL"}
    return {**env, "TARGETS": "staging,production,qa",
            "STAGING__TARGET_DATABASE_URL": staging_url,
            "STAGING__API_BASE_URL": "http://127.0.0.1:9/staging",
            "PRODUCTION__TARGET_DATABASE_URL": production_url,
            "PRODUCTION__API_BASE_URL": "http://127.0.0.1:9/production",
            "PRODUCTION__APPROVER_USER_IDS": "U_ALICE,U_DAVE,U_ERIN",
            "QA__API_BASE_URL": "http://127.0.0.1:9/qa"}


def start_form(fake: FakeSlack) -> dict[str, object]:
    forms = [c.args["view"] for c in fake.calls_to("views.update")
             if c.error is None and c.args["view"].get("callback_id") == START]
    return forms[-1] if forms else {}


async def test_one_serve_process_serves_every_usable_target(
    fake_slack: FakeSlack, bot_db_url: str, databases: DatabaseFactory, tmp_path: Path,
    bots: list[Bot],
) -> None:
    staging_url, production_url = [await databases.create(n)
                                   for n in ("serve_staging", "serve_production")]
    bot = Bot(targets_env(base_env(fake_slack, bot_db_url, staging_url, tmp_path),
                          staging_url, production_url), tmp_path / "serve.log")
    bots.append(bot)
    await bot.ready()
    log = (tmp_path / "serve.log").read_text()
    assert "target qa is refused and not served: missing QA__TARGET_DATABASE_URL" in log
    assert "serving targets staging, production" in log

    def command(text: str, user: str = "U_ALICE") -> bytes:
        return slash_command(text, user, CHANNEL, CHANNEL_NAME)

    assert await bot.post(command("help")) == 200
    assert await bot.post(command("qa db down")) == 200
    assert await bot.post(command("status")) == 200
    said = await fake_slack.wait_for(lambda: (lambda r: r if len(r) >= 1 else None)(
        fake_slack.replies_to("U_ALICE")))
    assert "*staging*" in said[-1] and "*production*" in said[-1]
    assert "target qa is refused: missing QA__TARGET_DATABASE_URL" in said[-1]

    for target, user in (("staging", "U_ALICE"), ("production", "U_ALICE")):
        before = json.dumps(start_form(fake_slack))
        assert await bot.post(command(f"{target} Phase 3 broke auth", user)) == 200
        form = await fake_slack.wait_for(
            lambda b=before: (f := start_form(fake_slack)) and json.dumps(f) != b and f)
        select = next(b for b in form["blocks"] if b.get("block_id") == TARGET_BLOCK_ID)
        values = {
            "reason": {"reason_input": {"type": "plain_text_input", "value": "Phase 3 broke"}},
            "lossy_ack": {"lossy_ack_input": {"type": "checkboxes", "selected_options": [
                {"value": "lossy_acknowledged"}]}},
            TARGET_BLOCK_ID: {TARGET_ACTION_ID: {
                "type": "static_select", "selected_option": select["element"]["initial_option"]}},
        }
        assert await bot.post(view_submission(user, START, form["private_metadata"],
                                              values)) == 200
    roots = await fake_slack.wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
        sorted(m.text.split(" in progress")[0] for m in fake_slack.roots(CHANNEL))))
    assert roots == ["Phase 3 rollback on production", "Phase 3 rollback on staging"]
