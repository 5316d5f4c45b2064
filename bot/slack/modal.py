"""The modals: starting a rollback (a reason, the acknowledgement that it loses every API key,
and — when the bot serves several targets — which target, a static_select with the target the
command named already chosen) and rejecting a step (why).

Slack gives a `trigger_id` about 3 seconds, so the start modal opens first as `loading_modal`
and becomes the form (or says why not) with `views.update` once the checks are done.

A modal's submission carries no `response_url`, so each modal keeps the one of the request that
opened it in `private_metadata` (Slack keeps it for us, up to 3,000 characters): a refusal after
the submission still reaches the person who submitted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.slack.actions import START_MODAL_CALLBACK
from bot.slack.mrkdwn import clip, cut

REASON_BLOCK_ID, REASON_ACTION_ID = "reason", "reason_input"
ACK_BLOCK_ID, ACK_ACTION_ID = "lossy_ack", "lossy_ack_input"
ACK_VALUE = "lossy_acknowledged"
LOSSY_TEXT = "all API keys will be lost; every client must be re-keyed"
ACK_TEXT = "I understand: every API key is lost"  # a checkbox option holds 75
TITLE = "Phase 3 rollback"
REJECT_MODAL_CALLBACK = "rollback_reject"
REJECT_BLOCK, REJECT_INPUT = "reject_reason", "reject_reason_input"
METADATA_LIMIT = 3000
TARGET_BLOCK_ID, TARGET_ACTION_ID = "target", "target_select"
SELECT_OPTIONS = 100  # a static_select holds at most 100 options
OPTION_TEXT = 75  # an option's text (plain_text) at most 75 characters, its value 150


@dataclass(frozen=True)
class Origin:
    """Where a modal came from: its channel (or the button it rejects) and the reply path."""

    subject: str
    response_url: str | None = None
    target: str | None = None  # the target the command named (None: the only one)

    def to_metadata(self) -> str:
        short = {"subject": self.subject, **({"target": self.target} if self.target else {})}
        whole = json.dumps({**short, "response_url": self.response_url})
        # Never over Slack's limit: without the reply path a refusal is only logged.
        return whole if len(whole) <= METADATA_LIMIT else json.dumps(short)

    @classmethod
    def parse(cls, metadata: str) -> Origin:
        """Also reads a bare channel id or button value (modals opened by older versions)."""
        try:
            data = json.loads(metadata)
        except ValueError:
            return cls(metadata)
        if isinstance(data, dict) and isinstance(data.get("subject"), str):
            url, target = data.get("response_url"), data.get("target")
            return cls(data["subject"], url if isinstance(url, str) else None,
                       target if isinstance(target, str) else None)
        return cls(metadata)


def _modal(blocks: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"type": "modal", "title": {"type": "plain_text", "text": TITLE},
            "close": {"type": "plain_text", "text": "Close"}, "blocks": blocks, **fields}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, 3000)}}


def loading_modal() -> dict[str, Any]:
    return _modal([_section(":hourglass: Checking who may approve and whether a rollback is "
                            "already active…")])


def refusal_modal(text: str) -> dict[str, Any]:
    """`text` is mrkdwn the caller has escaped."""
    return _modal([_section(f":no_entry: {text}")])


def _option(name: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": cut(name, OPTION_TEXT)}, "value": name}


def target_select(targets: tuple[str, ...], chosen: str) -> dict[str, Any]:
    """Which target: every target served (at most 100), the one the command named chosen."""
    options = [_option(name) for name in targets[:SELECT_OPTIONS]]
    element: dict[str, Any] = {
        "type": "static_select", "action_id": TARGET_ACTION_ID, "options": options,
        "placeholder": {"type": "plain_text", "text": "Choose the target"}}
    if chosen in targets[:SELECT_OPTIONS]:
        element["initial_option"] = _option(chosen)
    return {"type": "input", "block_id": TARGET_BLOCK_ID,
            "label": {"type": "plain_text", "text": "Target to roll back"},
            "hint": {"type": "plain_text", "text": "Every step's approval names this target."},
            "element": element}


def start_modal(reason_prefill: str, origin: Origin,
                targets: tuple[str, ...] = ()) -> dict[str, Any]:
    """`targets`: the targets to choose among when there are several (a static_select)."""
    reason_input: dict[str, Any] = {"type": "plain_text_input", "action_id": REASON_ACTION_ID,
                                    "multiline": True}
    if reason_prefill:
        reason_input["initial_value"] = cut(reason_prefill, 3000)
    where = " of the target chosen below" if len(targets) > 1 else (
        f" on *{origin.target}*" if origin.target else "")
    choose = [target_select(targets, origin.target or "")] if len(targets) > 1 else []
    return _modal([
        _section(f":warning: *LOSSY rollback*{where}: {LOSSY_TEXT}. Each of the six steps "
                 "will need two engineers' approval."),
        *choose,
        {"type": "input", "block_id": REASON_BLOCK_ID,
         "label": {"type": "plain_text", "text": "Why are you rolling back?"},
         "element": reason_input},
        {"type": "input", "block_id": ACK_BLOCK_ID,
         "label": {"type": "plain_text", "text": "Acknowledge"},
         "element": {"type": "checkboxes", "action_id": ACK_ACTION_ID, "options": [{
             "text": {"type": "plain_text", "text": ACK_TEXT}, "value": ACK_VALUE}]}},
    ], callback_id=START_MODAL_CALLBACK, private_metadata=origin.to_metadata(),
        submit={"type": "plain_text", "text": "Start rollback"},
        close={"type": "plain_text", "text": "Cancel"})


def reject_modal(origin: Origin) -> dict[str, Any]:
    return _modal([{
        "type": "input", "block_id": REJECT_BLOCK,
        "label": {"type": "plain_text", "text": "Why? (recorded in the incident log)"},
        "element": {"type": "plain_text_input", "action_id": REJECT_INPUT, "multiline": True},
    }], callback_id=REJECT_MODAL_CALLBACK, private_metadata=origin.to_metadata(),
        title={"type": "plain_text", "text": "Reject this step"},
        submit={"type": "plain_text", "text": "Reject and stop"})


def parse_start_submission(values: dict[str, Any]) -> tuple[str, bool]:
    """(reason, acknowledged) from a view_submission's `state.values`."""
    reason = (values.get(REASON_BLOCK_ID, {}).get(REASON_ACTION_ID, {}).get("value") or "").strip()
    selected = values.get(ACK_BLOCK_ID, {}).get(ACK_ACTION_ID, {}).get("selected_options") or []
    return reason, any(option.get("value") == ACK_VALUE for option in selected)


def parse_target_choice(values: dict[str, Any]) -> str | None:
    """The target chosen in the start modal's select (None: the modal had no select)."""
    chosen = values.get(TARGET_BLOCK_ID, {}).get(TARGET_ACTION_ID, {})
    option = chosen.get("selected_option") if isinstance(chosen, dict) else None
    return str(option.get("value") or "") if isinstance(option, dict) else (
        "" if TARGET_BLOCK_ID in values else None)


def parse_reject_submission(values: dict[str, Any]) -> str:
    return (values.get(REJECT_BLOCK, {}).get(REJECT_INPUT, {}).get("value") or "").strip()
