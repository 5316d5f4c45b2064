"""Block Kit for the follow-through (pure functions): the post-rollback checklist and the
one-off notices the thread gets — reminders, expired approvals, an unreachable quorum, an
escalation, pages sent or failed. Each returns (fallback text, blocks).

Text people typed (a reason to escalate) is escaped, so `<!channel>` stays words and never
becomes a mention; the mentions the bot means (`<@U…>`, `<!subteam^…>`) are built here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot.domain.events import EventKind
from bot.domain.follow_ups import FollowUpView, done_count
from bot.domain.steps import STEP_TITLES, StepName, step_number
from bot.domain.views import RunView
from bot.slack.actions import ActionId, FollowUpValue

Block = dict[str, Any]


def escape(text: str) -> str:
    """Slack's three escapes: what a person typed cannot mention anyone or fake a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _mentions(user_ids: Sequence[str], group_id: str | None) -> str:
    words = [f"<!subteam^{group_id}>"] if group_id else []
    words += [f"<@{uid}>" for uid in user_ids if uid and not uid.startswith("terminal:")]
    return " ".join(words)


def _step(step: str | None) -> str:
    if not step:
        return "the rollback"
    name = StepName(step)
    return f"Step {step_number(name)}/6 ({STEP_TITLES[name]})"


def follow_up_progress(run: RunView) -> str:
    return f"{done_count(run.follow_ups)}/{len(run.follow_ups)} done"


def _item_text(item: FollowUpView) -> str:
    mark = ":white_check_mark:" if item.done else ":white_large_square:"
    text = f"{mark} *{item.number}. {escape(item.title)}*"
    if item.owner_id:
        text += f"\nOwner: <@{item.owner_id}>" if not item.owner_id.startswith("terminal:") \
            else f"\nOwner: {escape(item.owner_name or '')}"
    if item.done and item.done_at is not None:
        who = f"<@{item.done_by_id}>" if item.done_by_id and not item.done_by_id.startswith(
            "terminal:") else escape(item.done_by_name or "")
        text += f"\nDone by {who} at {item.done_at:%Y-%m-%d %H:%M} UTC"
    return text


def checklist(run: RunView) -> tuple[str, list[Block]]:
    """The runbook's post-rollback actions, each with "I'll own it" and "Done" (action ids are
    unique in a message, so each carries its item: `follow_up_own-root_cause`)."""
    text = f"Post-rollback actions ({follow_up_progress(run)})"
    blocks: list[Block] = [section(f"*Post-rollback actions* — {follow_up_progress(run)}. "
                                   "Phase 3 is not tried again before these are done.")]
    for item in run.follow_ups:
        blocks.append(section(_item_text(item)))
        if item.done:
            continue
        value = FollowUpValue(run_id=run.run_id, item=item.item).to_value()
        blocks.append({"type": "actions", "block_id": f"follow-up-{item.item.value}",
                       "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "I'll own it"},
             "action_id": f"{ActionId.FOLLOW_UP_OWN.value}-{item.item.value}", "value": value},
            {"type": "button", "text": {"type": "plain_text", "text": "Done"},
             "action_id": f"{ActionId.FOLLOW_UP_DONE.value}-{item.item.value}", "value": value,
             "style": "primary"},
        ]})
    return text, blocks[:50]


def follow_up_summary_lines(run: RunView) -> list[str]:
    """The checklist as lines for the post-mortem summary."""
    lines = [f"*Post-rollback actions* ({follow_up_progress(run)}):"]
    for item in run.follow_ups:
        box = ":white_check_mark:" if item.done else ":white_large_square:"
        owner = f" — owner {escape(item.owner_name)}" if item.owner_name else ""
        lines.append(f"{box} {item.number}. {escape(item.title)}{owner}")
    return lines


def notice(kind: EventKind, step: str | None, data: Mapping[str, Any],
           run: RunView) -> tuple[str, list[Block]] | None:
    """The thread message for one follow-through entry (None: it shows nothing)."""
    if kind is EventKind.APPROVAL_REMINDED:
        who = _mentions(data.get("mention_user_ids") or [],
                        data.get("mention_usergroup_id")) or "Approvers"
        approved = ", ".join(escape(n) for n in data.get("approved") or []) or "nobody yet"
        what = (f"the Resend to {data.get('clients', '?')} unconfirmed clients of {_step(step)}"
                if data.get("resend") else _step(step))
        act = ("Review step 5's message above and resend (duplicates are possible)"
               if data.get("resend") else "Review its plan above and approve or reject")
        text = (f"{who}: {what} has waited {data.get('waited_minutes', '?')} min for "
                f"approval ({data.get('approvals', 0)}/{data.get('needed', 2)}; approved by "
                f"{approved}). {act}.")
        return f"Reminder: {what} is waiting for approval", [section(f":bell: {text}")]
    if kind is EventKind.APPROVAL_EXPIRED:
        user = data.get("user_id", "")
        who = f"<@{user}>" if user and not str(user).startswith("terminal:") \
            else escape(str(data.get("user_name", "")))
        what = f"the Resend of {_step(step)}" if data.get("resend") else _step(step)
        text = (f":hourglass_flowing_sand: The approval by {who} of {what} expired "
                f"(older than the approval TTL) and no longer counts: approve again if the plan "
                "still stands.")
        return "An approval expired", [section(text)]
    if kind is EventKind.QUORUM_UNREACHABLE:
        text = (f":rotating_light: {_step(step)} cannot reach its quorum: "
                f"{data.get('eligible_left', 0)} eligible engineers left, "
                f"{data.get('still_needed', 2)} approvals still needed. Add approvers "
                "(APPROVER_USER_IDS / APPROVER_USERGROUP_ID) or abort.")
        return "This rollback cannot reach its quorum", [section(text)]
    if kind is EventKind.ESCALATED:
        group = data.get("usergroup_id")
        who = f"<@{data.get('escalating_user_id')}>" if data.get("escalating_user_id") \
            else escape(str(data.get("user_name", "")))
        head = f"<!subteam^{group}>" if group else "(no ESCALATION_USERGROUP_ID is set)"
        lines = [f":sos: {head} escalation by {who}: {escape(str(data.get('why', '')))}",
                 f"*Run:* {run.status.value}; now at {_step(data.get('current_step'))}"]
        lines += [f"• {escape(str(s))}" for s in data.get("state") or []]
        return "Escalation", [section("\n".join(lines))]
    if kind is EventKind.PAGE_SENT:
        if data.get("action") != "trigger":
            return None
        return "On-call paged", [context(
            f":pager: PagerDuty paged ({data.get('severity')}, {data.get('trigger')}): "
            f"{escape(str(data.get('summary', '')))}")]
    if kind is EventKind.PAGE_FAILED:
        return "Paging failed", [section(
            f":warning: *Paging failed* ({data.get('action')} for {data.get('for_kind')}, "
            f"{data.get('attempts')} attempts): {escape(str(data.get('error', '')))}. The "
            "rollback goes on; page on-call by hand if they are needed.")]
    return None
