"""What `/rollback-phase3 …` asks for, read from its text (pure: tested by a table of cases).

`/rollback-phase3 <reason>` starts a rollback; `plan`, `status`, `check`, `escalate <why>` and
`help` are subcommands. With named targets (TARGETS) the target comes next:
`/rollback-phase3 production <reason>`, `/rollback-phase3 plan production`. With several
targets a start, a plan and an escalation must name one: an unknown word there is an error
naming the known targets, never silently taken as the first word of a reason. `status` and
`check` without a target answer for every target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SUBCOMMANDS = frozenset({"help", "status", "plan", "check", "escalate"})
START = "start"
USAGE = {START: "/rollback-phase3 <target> <reason>", "plan": "/rollback-phase3 plan <target>",
         "escalate": "/rollback-phase3 escalate <target> <why>"}


@dataclass(frozen=True)
class CommandText:
    word: str  # a subcommand, or `start`
    target: str | None = None  # the target named (lower-case); None: none named
    rest: str = ""  # the reason of a start, the why of an escalation
    error: str | None = None  # why it cannot be done as typed (mrkdwn-safe: no user text)


def _split(text: str) -> tuple[str, str]:
    parts = text.split(maxsplit=1)
    return (parts[0], parts[1].strip() if len(parts) > 1 else "") if parts else ("", "")


def parse_command(text: str, names: Sequence[str], named: bool) -> CommandText:
    """`names`: every configured target; `named`: whether targets have names at all (with
    only `default`, no word is ever read as a target)."""
    text = " ".join(text.split())
    if not text:
        return CommandText("help")
    first, after = _split(text)
    word, rest = (first.lower(), after) if first.lower() in SUBCOMMANDS else (START, text)
    if word == "help":
        return CommandText("help")
    head, tail = _split(rest)
    if named and head and head.lower() in names:
        return CommandText(word, head.lower(), tail)
    if len(names) > 1 and word in USAGE:
        known = ", ".join(names)
        if head:
            shown = head if len(head) <= 40 else head[:40] + "…"
            why = f"unknown target `{_plain(shown)}`; known targets: {known}."
        else:
            why = f"name the target; known targets: {known}."
        return CommandText(word, None, rest, f"{why} Use `{USAGE[word]}`.")
    return CommandText(word, None, rest)


def _plain(word: str) -> str:
    """A typed word shown back inside a code span: nothing in it may close the span, ping or
    link."""
    return "".join(ch for ch in word if ch.isalnum() or ch in "-_.")
