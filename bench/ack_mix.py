"""The requests `bench.ack_latency` sends: what a channel sends the bot during an incident.

Of every ten: six Approve clicks on the live run's step (one by an approver who has approved
already, five by people who may not approve: each is written to the inbox, processed and
refused by its `response_url`), one `/rollback-phase3 help` (answered in the ack), one
`/rollback-phase3 status` (refused by `response_url`: not an engineer) and two Reject reasons
submitted for that step (refused likewise). Twenty-five people send them, so each person sends
several, and their replies must come back in the order their requests were answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from bot.slack.actions import ActionId
from bot.slack.modal import Origin
from tests.slack.harness import CHANNEL, CHANNEL_NAME, button_value
from tests.slackwire.fake_web_api import FakeSlack, Message
from tests.slackwire.requests import block_actions, slash_command, view_submission

PEOPLE = tuple(f"U_PEER{n:02d}" for n in range(25))
APPROVED_ALREADY = "U_BOB"
REASON = {"reject_reason": {"reject_reason_input": {"type": "plain_text_input",
                                                    "value": "this looks wrong"}}}


@dataclass(frozen=True)
class BenchRequest:
    kind: str  # click, help, status, reject
    user: str
    body: bytes
    reply_to: str | None  # the response_url id the bot answers on; None: answered in the ack


def response_url_id(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _url_in(body: bytes) -> str:
    form = dict(parse_qsl(body.decode()))
    url = json.loads(form["payload"])["response_url"] if "payload" in form \
        else form["response_url"]
    return str(url)


def request(n: int, step: Message, fake: FakeSlack) -> BenchRequest:
    user = APPROVED_ALREADY if n % 10 == 0 else PEOPLE[n % len(PEOPLE)]
    slot = n % 10
    if slot <= 5:
        approve = button_value(step, ActionId.APPROVE) or ""
        body = block_actions(user, ActionId.APPROVE.value, approve, CHANNEL, step.ts,
                             step.thread_ts)
        return BenchRequest("click", user, body, response_url_id(_url_in(body)))
    if slot == 6:
        return BenchRequest("help", user, slash_command("help", user, CHANNEL, CHANNEL_NAME),
                            None)
    if slot == 7:
        body = slash_command("status", user, CHANNEL, CHANNEL_NAME)
        return BenchRequest("status", user, body, response_url_id(_url_in(body)))
    url = fake.issue_response_url(user, CHANNEL)
    origin = Origin(button_value(step, ActionId.REJECT) or "", url)
    return BenchRequest("reject", user, view_submission(user, "rollback_reject",
                                                        origin.to_metadata(), REASON),
                        response_url_id(url))
