"""A reject reason for a run that does not exist, from someone who may not reject: refused.

Found by the ack benchmark: the refusal was recorded in the run's incident log, which has no
row for a run that does not exist, so the foreign key failed and the person was told "this
failed" instead of why they were refused.
"""

from __future__ import annotations

import uuid

from bot.slack.actions import ButtonValue
from bot.slack.modal import Origin
from tests.slack.harness import CHANNEL, SlackBot
from tests.slackwire.requests import view_submission

REASON = {"reject_reason": {"reject_reason_input": {"type": "plain_text_input",
                                                    "value": "looks wrong"}}}


async def test_an_unauthorised_reject_of_a_missing_run_is_refused_not_failed(
    bot: SlackBot,
) -> None:
    button = ButtonValue(run_id=str(uuid.uuid4()), execution_id=str(uuid.uuid4()),
                         fingerprint="f").to_value()
    origin = Origin(button, bot.fake.issue_response_url("U_MALLORY", CHANNEL))
    status, _ = await bot.post(view_submission("U_MALLORY", "rollback_reject",
                                               origin.to_metadata(), REASON))
    assert status == 200
    replies = bot.replies("U_MALLORY")
    assert len(replies) == 1, replies
    assert "Refused: you are not an authorised approver" in replies[0]
    assert "Sorry" not in replies[0]
