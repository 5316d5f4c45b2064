"""Block Kit drawings of a run (pure functions). Each returns (fallback text, blocks).

Limits that bite (SLACK-WIRE.md): 50 blocks, 3,000 characters of section text, button text 75,
counted in UTF-16 units. Every text a person or the outside world wrote (reasons, names, step
output, facts, plans) goes through `mrkdwn.escape`, in the blocks and in the fallback text, so
it pings nobody and links nowhere. Each block gets a `block_id` drawn from its content: Slack
asks for a new block_id whenever a message is updated with new content, and the ids stay
unique within a message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.domain.log_chain import LogHead, verify_hint
from bot.domain.states import RunStatus, StepStatus
from bot.domain.steps import STEP_TITLES, step_number
from bot.domain.views import ApproverView, RunView, StepView
from bot.slack.actions import ActionId, ButtonValue
from bot.slack.follow_up_blocks import follow_up_progress, follow_up_summary_lines
from bot.slack.modal import LOSSY_TEXT
from bot.slack.mrkdwn import clip as clip_units
from bot.slack.mrkdwn import code_block, cut, escape

SECTION_LIMIT = 3000
MESSAGE_BLOCKS = 50
Block = dict[str, Any]
_USER_ID = re.compile(r"^[UW][A-Z0-9_]{2,}$")

STATUS_EMOJI: dict[StepStatus | None, str] = {
    None: ":white_circle:",
    StepStatus.AWAITING_APPROVAL: ":hourglass:",
    StepStatus.RUNNING: ":arrows_counterclockwise:",
    StepStatus.SUCCEEDED: ":white_check_mark:",
    StepStatus.ALREADY_DONE: ":white_check_mark:",
    StepStatus.FAILED: ":x:",
    StepStatus.INTERRUPTED: ":warning:",
    StepStatus.REJECTED: ":no_entry:",
    StepStatus.ABORTED: ":no_entry:",
}


def clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return clip_units(text, limit)


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text or " ")}}


def mention(user_id: str, user_name: str) -> str:
    """`<@U…>` for a Slack user id; anything else (a terminal user) is shown as its name."""
    return f"<@{user_id}>" if _USER_ID.match(user_id) else escape(user_name)


def with_block_ids(blocks: Sequence[Block]) -> list[Block]:
    """Each block's id from its position and content: new content, new id; unique."""
    named = []
    for n, block in enumerate(blocks[:MESSAGE_BLOCKS]):
        body = {k: v for k, v in block.items() if k != "block_id"}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        prefix = str(block.get("block_id", block["type"]))[:200]
        named.append({**body, "block_id": f"{prefix}.{n}.{digest}"})
    return named


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = int((end - start).total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def button(text: str, action: ActionId, value: ButtonValue, style: str | None = None,
           confirm: tuple[str, str] | None = None) -> Block:
    element: Block = {"type": "button", "text": {"type": "plain_text", "text": cut(text, 75)},
                      "action_id": action.value, "value": value.to_value()}
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = {
            "title": {"type": "plain_text", "text": confirm[0]},
            "text": {"type": "mrkdwn", "text": confirm[1]},
            "confirm": {"type": "plain_text", "text": "Yes"},
            "deny": {"type": "plain_text", "text": "No"},
        }
    return element


def step_label(step: StepView) -> str:
    return f"Step {step_number(step.step)}/6: {STEP_TITLES[step.step]}"


def run_state(run: RunView) -> str:
    """The run's state in words; never plain "completed" while deliveries are unconfirmed."""
    if run.status is RunStatus.COMPLETED_UNCONFIRMED:
        return f"completed with {len(run.unconfirmed)} unconfirmed deliveries"
    return {RunStatus.ACTIVE: "in progress", RunStatus.COMPLETED: "completed",
            RunStatus.ABORTED: "ABORTED"}[run.status]


def status_board(run: RunView) -> tuple[str, list[Block]]:
    state = run_state(run)
    lines = []
    for step in run.steps:
        status = step.status.value.replace("_", " ") if step.status else "not reached"
        attempt = f" (attempt {step.attempt})" if step.attempt > 1 else ""
        took = duration(step.started_at, step.finished_at)
        lines.append(f"{STATUS_EMOJI[step.status]} {step_label(step)} — {status}{attempt}"
                     + (f", {took}" if took else ""))
    text = clip(f"Phase 3 rollback{run.target_label} {state}: started by "
                f"{escape(run.initiator_name)} — "
                f"{escape(run.reason)}", 4000)
    blocks = [
        {"type": "header", "text": {"type": "plain_text",
                                    "text": f"Phase 3 rollback{run.target_label}"}},
        section(f":warning: *LOSSY rollback*: {LOSSY_TEXT}."),
        section(f"*Started by* {mention(run.initiator_id, run.initiator_name)} · *Status:* "
                f"{state}\n*Reason:* {escape(run.reason)}"
                + (f"\n*Stopped:* {escape(run.abort_reason)}" if run.abort_reason else "")
                + "".join(f"\n:warning: {escape(line)}" for line in run.left_behind)
                + "".join(f"\n:warning: {escape(notice)}" for notice in run.notices)),
        section("\n".join(lines)),
        {"type": "context", "elements": [{"type": "mrkdwn", "text":
                                          f"run `{escape(run.run_id)}` · details in the thread"}]},
    ]
    if run.follow_ups:
        blocks.insert(4, section(f"*Post-rollback actions:* {follow_up_progress(run)} "
                                 "(checklist in the thread)"))
    if run.status is RunStatus.ACTIVE:
        blocks.append({"type": "actions", "block_id": f"escalate-{run.run_id}", "elements": [
            button("Escalate", ActionId.ESCALATE, ButtonValue(run_id=run.run_id,
                                                              execution_id=""), "danger",
                   ("Escalate this rollback?", "The escalation group is mentioned in the "
                    "thread and a high-severity page goes out with the run's state.")),
        ]})
    return text, with_block_ids(blocks)


def facts_text(facts: Mapping[str, Any]) -> str:
    lines = []
    for key, value in facts.items():
        shown = value if isinstance(value, str | int | float) or value is None \
            else json.dumps(value, default=str)
        lines.append(f"• *{escape(key)}*: {escape(shown)}")
    return "\n".join(lines)


TERMINAL_MARK = " (terminal, TOTP)"


def approver_mention(approver: ApproverView) -> str:
    """An approval given at a terminal (break-glass, where each engineer proves who they are
    with their own TOTP code) says so: it was not clicked in Slack."""
    return mention(approver.user_id, approver.user_name) + (
        TERMINAL_MARK if approver.source == "terminal" else "")


def approvals_text(label: str, approvers: Sequence[ApproverView], needed: int,
                   waiting: bool) -> str:
    """`*label* n/needed: who`, counting only fresh approvals; while the approvals are still
    wanted (`waiting`), the expired ones struck through: "expired, approve again". A step's
    and a resend's alike."""
    fresh = [a for a in approvers if not a.expired]
    who = ", ".join(approver_mention(a) for a in fresh) or "none yet"
    expired = ", ".join(f"~{approver_mention(a)}~" for a in approvers if a.expired)
    return (f"*{label}* {len(fresh)}/{needed}: {who}"
            + (f"\n:hourglass_flowing_sand: expired, approve again: {expired}"
               if expired and waiting else ""))


def step_message(run: RunView, step: StepView, now: datetime) -> tuple[str, list[Block]]:
    status = step.status
    header = f"{STATUS_EMOJI[status]} *{step_label(step)}*" + (
        f" (attempt {step.attempt})" if step.attempt > 1 else "") + (
        f" · target *{escape(run.target)}*" if run.target_label else "")
    blocks: list[Block] = [section(header)]
    if step.plan is not None:
        plan_lines = [f"*Plan:* {escape(step.plan.summary)}",
                      *(escape(d) for d in step.plan.details)]
        plan_lines += [f":warning: {escape(w)}" for w in step.plan.warnings]
        blocks.append(section("\n".join(plan_lines)))
    blocks.append(section(approvals_text("Approvals", step.approvers, step.approvals_needed,
                                         waiting=status is StepStatus.AWAITING_APPROVAL)))
    value = ButtonValue(run_id=run.run_id, execution_id=step.execution_id or "",
                        fingerprint=step.plan.fingerprint if step.plan else "")
    live = run.status is RunStatus.ACTIVE
    if status is StepStatus.AWAITING_APPROVAL and live:
        blocks.append({"type": "actions", "block_id": f"approve-{step.execution_id}",
                       "elements": [
            button("Approve", ActionId.APPROVE, value, "primary"),
            button("Reject", ActionId.REJECT, value, "danger",
                   ("Reject this step?", "The rollback stops and your reason is recorded.")),
        ]})
    elif status is StepStatus.RUNNING:
        blocks.append(section(f"Running for {duration(step.started_at, now)} · "
                              f"{step.output_line_count} output lines"))
        if step.output_tail:
            blocks.append(section(code_block(step.output_tail)))
    elif status in (StepStatus.SUCCEEDED, StepStatus.ALREADY_DONE):
        took = duration(step.started_at, step.finished_at)
        blocks.append(section(f"*Done* in {took}: {escape(step.summary or '')}"))
        if step.facts:
            blocks.append(section(facts_text(step.facts)))
        blocks += resend_blocks(run, step)
    elif status in (StepStatus.FAILED, StepStatus.INTERRUPTED):
        blocks.append(section(f"*{status.value.title()}:* {escape(step.summary or '')}"))
        if step.error_tail:
            blocks.append(section(code_block(step.error_tail)))
        if live:
            blocks.append({"type": "actions", "block_id": f"retry-{step.execution_id}",
                           "elements": [
                button("Retry (needs 2 new approvals)", ActionId.RETRY, value, "primary"),
                button("Abort rollback", ActionId.ABORT, value, "danger",
                       ("Abort the rollback?", "The run stops here; what is done stays done.")),
            ]})
    elif status in (StepStatus.REJECTED, StepStatus.ABORTED):
        blocks.append(section(f"*Stopped:* {escape(run.abort_reason or status.value)}"
                              + "".join(f"\n{escape(line)}" for line in run.left_behind)))
    state = status.value.replace("_", " ") if status else "not reached"
    return f"{step_label(step)}{run.target_label}: {state}", with_block_ids(blocks)


def resend_blocks(run: RunView, step: StepView) -> list[Block]:
    """Step 5's unconfirmed clients, the resend so far, and Resend (two approvals)."""
    resend = step.resend
    if resend is None or (not resend.clients and resend.execution_id is None):
        return []
    lines = []
    if resend.clients:
        lines.append(f":warning: *{len(resend.clients)} unconfirmed* (the bot stopped mid-send; "
                     f"nobody can tell whether they got their key): "
                     + ", ".join(f"`{escape(c)}`" for c in resend.clients))
    if resend.status is StepStatus.RUNNING:
        lines.append(":arrows_counterclockwise: resending now")
    elif resend.status is not None and resend.status is not StepStatus.AWAITING_APPROVAL:
        lines.append(f"*Last resend* {resend.status.value.replace('_', ' ')}: "
                     f"{escape(resend.summary or '')}")
    if resend.offered:
        lines.append(approvals_text("Resend approvals", resend.approvers,
                                    resend.approvals_needed, waiting=True))
    blocks = [section("\n".join(lines))]
    if resend.offered:
        count = len(resend.clients)
        value = ButtonValue(run_id=run.run_id, execution_id=step.execution_id or "",
                            fingerprint=resend.fingerprint)
        blocks.append({"type": "actions", "block_id": f"resend-{step.execution_id}",
                       "elements": [button(
                           f"Resend to {count} uncertain clients", ActionId.RESEND, value,
                           "danger", (f"Resend to {count} uncertain clients?",
                                      "Duplicates are possible: each of these clients may "
                                      "already have its key and would get it twice. Your "
                                      "click is one approval; the emails go out when a "
                                      "second engineer approves."))]})
    return blocks


def run_summary(run: RunView) -> tuple[str, list[Block]]:
    """The post-mortem summary: durations, approvers, counts, backup location."""
    lines = []
    for step in run.steps:
        approvers = ", ".join(escape(a.user_name) for a in step.approvers) or "—"
        took = duration(step.started_at, step.finished_at) or "—"
        state = step.status.value if step.status else "not reached"
        lines.append(f"{step_label(step)}: {state} in {took}; approved by {approvers}")
    facts = {s.step: s.facts for s in run.steps}
    key_facts = []
    for step_view in run.steps:
        f = facts.get(step_view.step) or {}
        for key in ("path", "sha256", "size_bytes", "revision_before", "revision_after",
                    "clients_rotated", "sent", "failed", "no_contact", "uncertain", "passed",
                    "bogus_key_status"):
            if key in f:
                key_facts.append(f"• {step_view.step.value}.{key}: "
                                 f"{escape(json.dumps(f[key], default=str))}")
    state = run_state(run).lower()  # "Rollback aborted: …" (the board shouts ABORTED)
    text = f"Rollback {state}: summary for the post-mortem"
    blocks = [
        section(f"*Rollback {state}* — total {duration(run.created_at, run.finished_at)}"
                + (f"\n*Stopped:* {escape(run.abort_reason)}" if run.abort_reason else "")
                + "".join(f"\n{escape(line)}" for line in run.left_behind)
                + ("\n:warning: *Unconfirmed deliveries* (Resend on step 5, two approvals): "
                   + ", ".join(f"`{escape(c)}`" for c in run.unconfirmed)
                   if run.unconfirmed else "")),
        section("\n".join(lines)),
    ]
    if key_facts:
        blocks.append(section("\n".join(key_facts)))
    if run.follow_ups:
        blocks.append(section("\n".join(follow_up_summary_lines(run))))
    if run.log_head is not None:
        blocks.append(section(log_head_text(run.run_id, run.log_head)))
    return text, with_block_ids(blocks)


def log_head_text(run_id: str, head: LogHead) -> str:
    """The incident log's chain head as this message was drawn: a copy of it outside the
    database, which `rollback-bot verify-log` checks the stored log against."""
    return (f"*Incident log* ({head.seq} events, hash-chained) head: `{head.hash}`\n"
            f"Check the stored log against it: `{verify_hint(run_id, head.hash)}`")


def help_text(targets: Sequence[str] = ()) -> str:
    """`targets`: the configured target names, when they have names (TARGETS)."""
    after = " <target>" if targets else ""
    return ("*/rollback-phase3* — the Phase 3 emergency rollback (LOSSY: every API key is lost)\n"
            f"• `/rollback-phase3{after} <reason>` start a rollback (opens a confirmation)\n"
            f"• `/rollback-phase3 plan{after}` every step's plan with live facts; nothing "
            "changes\n"
            f"• `/rollback-phase3 status{after}` the active rollback\n"
            f"• `/rollback-phase3 check{after}` preflight of every dependency\n"
            f"• `/rollback-phase3 escalate{after} <why>` mention the escalation group, page "
            "on-call\n"
            "• `/rollback-phase3 help` this text\n"
            + (f"Targets: {', '.join(escape(name) for name in targets)}; status and check "
               "without one answer for each.\n" if targets else "")
            + "Each step needs two engineers' approval; the thread is the incident log.")
