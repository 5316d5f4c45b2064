"""Whatever a run holds, its drawings stay within Block Kit's limits as Slack counts them
(UTF-16 units), and an update never reuses a block_id for new content."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER
from bot.domain.views import ApproverView, PlanView, RunView, StepView
from bot.slack import blocks, modal
from bot.slack.mrkdwn import clip, cut, units
from tests.slackwire.block_kit import OPTION_TEXT, message_block_errors, view_errors

NOW = datetime(2026, 12, 1, tzinfo=UTC)
HUGE = "😀<!channel>&" * 2000  # 26,000 UTF-16 units, escaping makes it longer still


def run_view(status: StepStatus, text: str = HUGE, run: RunStatus = RunStatus.ACTIVE
             ) -> RunView:
    steps = tuple(
        StepView(step=name, execution_id=f"e{n}", attempt=3, status=status,
                 plan=PlanView(text, (text,) * 30, (text,) * 30, "f" * 16),
                 approvers=(ApproverView("U_BOB", text), ApproverView("U_CAROL", "carol")),
                 started_at=NOW - timedelta(seconds=75), finished_at=NOW,
                 output_tail=(text,) * 50, output_line_count=10**6, summary=text,
                 facts={text: text, "n": 1, "list": [text] * 10}, error_tail=(text,) * 50)
        for n, name in enumerate(STEP_ORDER))
    return RunView("r" * 36, run, "U_ALICE", text, text, NOW - timedelta(hours=1), NOW, steps,
                   abort_reason=text, channel_id="C_ONCALL", thread_ts="1.1")


@pytest.mark.parametrize("status", list(StepStatus))
def test_every_drawing_of_a_huge_run_is_valid_block_kit(status: StepStatus) -> None:
    view = run_view(status)
    drawings = [blocks.status_board(view), blocks.run_summary(view),
                *(blocks.step_message(view, step, NOW) for step in view.steps)]
    for text, drawn in drawings:
        assert message_block_errors(drawn) == [], drawn
        assert 0 < units(text) <= 40000


def test_modals_are_valid_and_the_lossy_checkbox_is_well_within_its_limit() -> None:
    origin = modal.Origin("C_ONCALL", "https://hooks.slack.com/commands/T1/1/" + "x" * 200)
    for view in (modal.start_modal(HUGE, origin), modal.loading_modal(),
                 modal.refusal_modal(HUGE), modal.reject_modal(origin)):
        assert view_errors(view) == [], view
    assert len(modal.ACK_TEXT) <= OPTION_TEXT - 25


def test_clipping_counts_utf16_units_and_never_splits_a_character_or_an_escape() -> None:
    assert units("😀") == 2
    assert cut("a😀", 2) == "a"  # the emoji would need 3
    assert cut("ab&amp;c", 5) == "ab"  # not "ab&am"
    clipped = clip("😀" * 2000, 3000)
    assert units(clipped) <= 3000 and clipped.endswith("…[cut]")


def test_an_update_with_new_content_gets_new_block_ids() -> None:
    before = run_view(StepStatus.AWAITING_APPROVAL, "short")
    after = run_view(StepStatus.RUNNING, "short")
    old = blocks.step_message(before, before.steps[0], NOW)[1]
    new = blocks.step_message(after, after.steps[0], NOW)[1]
    old_ids = {b["block_id"]: b for b in old}
    for block in new:
        kept = old_ids.get(block["block_id"])
        assert kept is None or kept == block, "a block_id kept for new content"
    again = blocks.step_message(before, before.steps[0], NOW)[1]
    assert [b["block_id"] for b in again] == [b["block_id"] for b in old]  # same content


def test_the_target_select_is_valid_with_the_named_target_chosen_and_caps_at_100() -> None:
    origin = modal.Origin("C_ONCALL", None, "production")
    view = modal.start_modal("db broken", origin, ("staging", "production"))
    assert view_errors(view) == [], view
    select = next(b for b in view["blocks"] if b.get("block_id") == modal.TARGET_BLOCK_ID)
    assert select["element"]["initial_option"]["value"] == "production"
    many = tuple(f"target_{n:03d}" for n in range(150))
    crowded = modal.start_modal("", modal.Origin("C_ONCALL", None, "target_149"), many)
    assert view_errors(crowded) == [], "at most 100 options; a target past them is not chosen"


@pytest.mark.parametrize(("change", "error"), [
    (lambda e: e.update(options=e["options"] * 51), "no more than 100 items"),
    (lambda e: e.update(initial_option={"text": {"type": "plain_text", "text": "qa"},
                                        "value": "qa"}), "initial_option must exactly match"),
    (lambda e: e["options"][0].update(text={"type": "mrkdwn", "text": "*staging*"}),
     "plain_text"),
    (lambda e: e["options"][0].update(value="v" * 151), "less than 151"),
    (lambda e: e.update(placeholder={"type": "plain_text", "text": "p" * 151}), "less than 151"),
    (lambda e: e["options"].append(dict(e["options"][0])), "option values must be unique"),
])
def test_the_fake_refuses_a_select_slack_would_refuse(change: Any, error: str) -> None:
    view = modal.start_modal("", modal.Origin("C_ONCALL", None, "staging"),
                             ("staging", "production"))
    element = next(b for b in view["blocks"]
                   if b.get("block_id") == modal.TARGET_BLOCK_ID)["element"]
    change(element)
    assert any(error in problem for problem in view_errors(view)), view_errors(view)
