"""The start modal: a reason, and the acknowledgement that this rollback loses every API key."""

from __future__ import annotations

from typing import Any

from bot.slack.actions import START_MODAL_CALLBACK

REASON_BLOCK_ID, REASON_ACTION_ID = "reason", "reason_input"
ACK_BLOCK_ID, ACK_ACTION_ID = "lossy_ack", "lossy_ack_input"
ACK_VALUE = "lossy_acknowledged"
LOSSY_TEXT = "all API keys will be lost; every client must be re-keyed"


def start_modal(reason_prefill: str, private_metadata: str) -> dict[str, Any]:
    reason_input: dict[str, Any] = {"type": "plain_text_input", "action_id": REASON_ACTION_ID,
                                    "multiline": True}
    if reason_prefill:
        reason_input["initial_value"] = reason_prefill[:3000]
    return {
        "type": "modal",
        "callback_id": START_MODAL_CALLBACK,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Phase 3 rollback"},
        "submit": {"type": "plain_text", "text": "Start rollback"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text":
                f":warning: *LOSSY rollback*: {LOSSY_TEXT}. Each of the six steps will need "
                "two engineers' approval."}},
            {"type": "input", "block_id": REASON_BLOCK_ID,
             "label": {"type": "plain_text", "text": "Why are you rolling back?"},
             "element": reason_input},
            {"type": "input", "block_id": ACK_BLOCK_ID,
             "label": {"type": "plain_text", "text": "Acknowledge"},
             "element": {"type": "checkboxes", "action_id": ACK_ACTION_ID, "options": [{
                 "text": {"type": "plain_text", "text": f"I understand: {LOSSY_TEXT}"},
                 "value": ACK_VALUE}]}},
        ],
    }


def parse_start_submission(values: dict[str, Any]) -> tuple[str, bool]:
    """(reason, acknowledged) from a view_submission's `state.values`."""
    reason = (values.get(REASON_BLOCK_ID, {}).get(REASON_ACTION_ID, {}).get("value") or "").strip()
    selected = values.get(ACK_BLOCK_ID, {}).get(ACK_ACTION_ID, {}).get("selected_options") or []
    return reason, any(option.get("value") == ACK_VALUE for option in selected)
