"""Step 5's Resend as Slack draws it: the button and its confirmation pass Block Kit's checks
(the strict fake's), the confirmation says duplicates are possible, and a run that ended with
unconfirmed deliveries never reads plain "completed"."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from bot.domain.events import EventKind
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_ORDER, StepName
from bot.domain.views import ApproverView, PlanView, ResendView, RunView, StepView
from bot.slack import blocks
from bot.slack.actions import ActionId, ButtonValue
from bot.slack.follow_up_blocks import notice
from tests.slackwire.block_kit import CONFIRM_TEXT, CONFIRM_TITLE, message_block_errors

NOW = datetime(2026, 12, 1, tzinfo=UTC)
CLIENTS = ("4482bef6", "63fae296", "bb55be0a")


def run_with(resend: ResendView, status: RunStatus) -> RunView:
    steps = tuple(StepView(step=name, execution_id=f"e{n}", attempt=1,
                           status=StepStatus.SUCCEEDED, plan=PlanView("p", (), (), "f" * 16),
                           started_at=NOW, finished_at=NOW, summary="done",
                           resend=resend if name is StepName.EMAIL_CLIENTS else None)
                  for n, name in enumerate(STEP_ORDER))
    return RunView("r" * 36, status, "U_ALICE", "alice", "why", NOW, NOW, steps,
                   unconfirmed=resend.clients)


def section_texts(drawn: list[dict[str, object]]) -> str:
    """What a person reads in the message's sections, line by line."""
    return "\n".join(str(b["text"]["text"]) for b in drawn  # type: ignore[index]
                     if b.get("type") == "section")


def resend_button(drawn: list[dict[str, object]]) -> dict[str, object]:
    for block in drawn:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element["action_id"] == ActionId.RESEND.value:
                return element  # type: ignore[no-any-return]
    raise AssertionError("no Resend button")


def test_resend_button_with_its_confirm_is_valid_and_warns_of_duplicates() -> None:
    resend = ResendView(CLIENTS, "fp" * 8, offered=True, execution_id="x1",
                        status=StepStatus.AWAITING_APPROVAL,
                        approvers=(ApproverView("U_BOB", "bob"),))
    view = run_with(resend, RunStatus.COMPLETED_UNCONFIRMED)
    step5 = view.steps[4]
    _, drawn = blocks.step_message(view, step5, NOW)
    assert message_block_errors(drawn) == []
    button = resend_button(drawn)
    assert button["text"]["text"] == "Resend to 3 uncertain clients"  # type: ignore[index]
    confirm = button["confirm"]
    assert "Duplicates are possible" in confirm["text"]["text"]  # type: ignore[index]
    assert len(confirm["text"]["text"]) <= CONFIRM_TEXT  # type: ignore[index]
    assert len(confirm["title"]["text"]) <= CONFIRM_TITLE  # type: ignore[index]
    value = ButtonValue.parse(str(button["value"]))
    assert (value.execution_id, value.fingerprint) == ("e4", "fp" * 8)
    text = str(drawn)
    assert all(c in text for c in CLIENTS) and "1/2" in text and "<@U_BOB>" in text


def test_a_run_with_unconfirmed_deliveries_never_reads_plain_completed() -> None:
    resend = ResendView(CLIENTS, "fp" * 8, offered=True)
    view = run_with(resend, RunStatus.COMPLETED_UNCONFIRMED)
    for text, drawn in (blocks.status_board(view), blocks.run_summary(view)):
        assert message_block_errors(drawn) == []
        assert "completed with 3 unconfirmed deliveries" in text + str(drawn)
    _, summary = blocks.run_summary(view)
    assert all(c in str(summary) for c in CLIENTS), "the post-mortem summary names them"
    done = run_with(ResendView((), "fp" * 8, offered=False, execution_id="x1",
                               status=StepStatus.SUCCEEDED, summary="3 of 3 emailed again"),
                    RunStatus.COMPLETED)
    board_text, board = blocks.status_board(done)
    assert "unconfirmed" not in board_text + str(board)
    _, step5 = blocks.step_message(done, done.steps[4], NOW)
    assert message_block_errors(step5) == []
    assert "3 of 3 emailed again" in str(step5)
    assert not [b for b in step5 if b.get("type") == "actions"], "nothing left to resend"


def test_no_resend_is_offered_while_one_runs() -> None:
    resend = dataclasses.replace(ResendView(CLIENTS, "fp" * 8, offered=False),
                                 status=StepStatus.RUNNING, execution_id="x1")
    view = run_with(resend, RunStatus.ACTIVE)
    _, drawn = blocks.step_message(view, view.steps[4], NOW)
    assert "resending now" in str(drawn)
    assert not [b for b in drawn if b.get("type") == "actions"]


def test_an_expired_resend_approval_is_struck_through_as_a_steps_is() -> None:
    """Bob's approval is older than the TTL (the log says so): it no longer counts, and the
    message asks him to approve again, in the words a step's message uses."""
    approvers = (ApproverView("U_BOB", "bob", expired=True), ApproverView("U_CAROL", "carol"))
    resend = ResendView(CLIENTS, "fp" * 8, offered=True, execution_id="x1",
                        status=StepStatus.AWAITING_APPROVAL, approvers=approvers)
    view = run_with(resend, RunStatus.COMPLETED_UNCONFIRMED)
    _, drawn = blocks.step_message(view, view.steps[4], NOW)
    assert message_block_errors(drawn) == []
    shown = section_texts(drawn)
    assert "*Resend approvals* 1/2: <@U_CAROL>" in shown, "only the fresh one counts"
    assert ":hourglass_flowing_sand: expired, approve again: ~<@U_BOB>~" in shown
    assert "<@U_BOB>," not in shown and "<@U_CAROL>~" not in shown
    resend_button(drawn)  # still offered: Bob may approve again

    waiting = dataclasses.replace(view.steps[0], status=StepStatus.AWAITING_APPROVAL,
                                  approvers=approvers)
    _, step1 = blocks.step_message(dataclasses.replace(view, status=RunStatus.ACTIVE),
                                   waiting, NOW)
    assert "*Approvals* 1/2: <@U_CAROL>\n:hourglass_flowing_sand: expired, approve again: " \
           "~<@U_BOB>~" in section_texts(step1), "the same drawing as a step's approvals"


def test_only_expired_resend_approvals_read_none_yet() -> None:
    resend = ResendView(CLIENTS, "fp" * 8, offered=True, execution_id="x1",
                        status=StepStatus.AWAITING_APPROVAL,
                        approvers=(ApproverView("U_BOB", "bob", expired=True),))
    view = run_with(resend, RunStatus.ACTIVE)
    _, drawn = blocks.step_message(view, view.steps[4], NOW)
    assert message_block_errors(drawn) == []
    assert "*Resend approvals* 0/2: none yet\n:hourglass_flowing_sand: expired, approve " \
           "again: ~<@U_BOB>~" in section_texts(drawn)


def test_the_thread_notice_names_the_resend_whose_approval_expired() -> None:
    view = run_with(ResendView(CLIENTS, "fp" * 8, offered=True), RunStatus.COMPLETED_UNCONFIRMED)
    data = {"user_id": "U_BOB", "user_name": "bob", "execution_id": "x1"}
    _, resend = notice(EventKind.APPROVAL_EXPIRED, StepName.EMAIL_CLIENTS.value,
                       {**data, "resend": True}, view) or ("", [])
    _, step = notice(EventKind.APPROVAL_EXPIRED, StepName.EMAIL_CLIENTS.value, data,
                     view) or ("", [])
    assert "The approval by <@U_BOB> of the Resend of Step 5/6" in section_texts(resend)
    assert "The approval by <@U_BOB> of Step 5/6" in section_texts(step)
