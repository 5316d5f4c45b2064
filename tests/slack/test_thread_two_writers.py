"""Two real `rollback-bot serve --http` processes on one bot database and one Slack: exactly one
writes a run's thread; when it dies, the other takes the thread over and finishes it. Each
message, upload and summary appears once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bot.slack.actions import ActionId
from tests.crash.bot_process import Bot, approve_step, base_env, bots, start_run, step_message
from tests.slack.harness import CHANNEL, button_value
from tests.slackwire.fake_web_api import FakeSlack, Message
from tests.slackwire.requests import view_submission

__all__ = ["bots"]  # the fixture that reaps the processes


def root_of(fake: FakeSlack, run_number: int) -> Message:
    roots = sorted(fake.roots(CHANNEL), key=lambda m: float(m.ts))
    return roots[run_number - 1]


def thread_kinds(fake: FakeSlack, root: Message) -> Counter[str]:
    """Thread messages by kind ("Step 1/6", "Rollback aborted"), and shared files by name."""
    kinds = Counter(m.text.split(":")[0] for m in fake.thread(CHANNEL, root.ts))
    kinds.update(f"file {u['filename']}" for u in fake.uploads.values()
                 if u.get("thread_ts") == root.ts)
    return kinds


async def reject(bot: Bot, message: Message, why: str) -> None:
    await bot.click("U_BOB", ActionId.REJECT, message)
    value = button_value(message, ActionId.REJECT)
    assert value
    values = {"reject_reason": {"reject_reason_input": {"type": "plain_text_input",
                                                        "value": why}}}
    assert await bot.post(view_submission("U_BOB", "rollback_reject", value, values)) == 200


def writers_of(processes: list[tuple[Bot, Path]], run_id: str) -> list[Bot]:
    """The processes that said they write `run_id`'s thread."""
    return [bot for bot, log in processes
            if f"writes the thread of run {run_id}" in log.read_text()]


def run_of(root: Message) -> str:
    assert root.metadata is not None, "the root carries its identity"
    return str(root.metadata["event_payload"]["run"])


async def test_one_writer_and_a_takeover_each_message_once(
    bots: list[Bot], fake_slack: FakeSlack, bot_db_url: str, target_db_url: str,
    tmp_path: Path,
) -> None:
    env = base_env(fake_slack, bot_db_url, target_db_url, tmp_path)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first, second = Bot(env, logs[0]), Bot(env, logs[1])
    bots += [first, second]
    await first.ready()
    await second.ready()

    # Both alive: the run is written by one of them; the summary appears once.
    await start_run(first)
    await approve_step(second, fake_slack, 1)
    waiting = await step_message(fake_slack, 2, ActionId.REJECT)
    await reject(second, waiting, "not tonight")
    root = await fake_slack.wait_for(lambda: root_of(fake_slack, 1), within=30)
    await fake_slack.wait_for(lambda: any(k.startswith("file rollback-")
                                          for k in thread_kinds(fake_slack, root)), within=60)
    kinds = thread_kinds(fake_slack, root)
    assert kinds["Step 1/6"] == kinds["Step 2/6"] == kinds["Rollback aborted"] == 1, kinds
    assert sum(v for k, v in kinds.items() if k.startswith("file rollback-")) == 1, kinds
    assert len(fake_slack.roots(CHANNEL)) == 1
    processes = list(zip([first, second], logs, strict=True))
    assert len(writers_of(processes, run_of(root))) == 1, "one process wrote the thread"

    # The writer dies mid-run: the other takes the thread over and finishes it, once each.
    await start_run(first)
    second_root = await fake_slack.wait_for(
        lambda: len(fake_slack.roots(CHANNEL)) == 2 and root_of(fake_slack, 2), within=30)
    second_run = run_of(second_root)
    [writer] = writers_of(processes, second_run)
    survivor = second if writer is first else first
    message = await step_message(fake_slack, 1, ActionId.APPROVE)
    await approve_step(survivor, fake_slack, 1)
    writer.kill()
    waiting = await fake_slack.wait_for(lambda: next(
        (m for m in fake_slack.thread(CHANNEL, second_root.ts)
         if m.text.startswith("Step 2/6") and button_value(m, ActionId.REJECT)), None),
        within=60)
    await reject(survivor, waiting, "stop here")
    await fake_slack.wait_for(lambda: any(k.startswith("file rollback-") for k in
                                          thread_kinds(fake_slack, second_root)), within=60)
    await fake_slack.wait_for(lambda: "succeeded" in message.text, within=30)
    kinds = thread_kinds(fake_slack, second_root)
    assert kinds["Step 1/6"] == kinds["Step 2/6"] == kinds["Rollback aborted"] == 1, kinds
    assert sum(v for k, v in kinds.items() if k.startswith("file ")) == 1, kinds
    assert len(fake_slack.roots(CHANNEL)) == 2
    assert set(writers_of(processes, second_run)) == {writer, survivor}, "taken over"
