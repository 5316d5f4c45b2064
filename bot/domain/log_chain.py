"""The incident log's hash chain, recomputed outside the database.

The database writes the chain (the insert trigger of migration 0003_event_chain): each event of
a run has a `seq` (1, 2, …), the previous event's hash (`prev_hash`; the first one's is
GENESIS) and its own `hash` = SHA-256 of `encoding(...)` below. This module encodes exactly as
the database's `incident_event_encoding` does, so anyone holding the rows (or a dump of them)
can recompute every link without trusting the database that stored them: an event edited,
deleted, inserted or moved breaks the chain at the first event it touches. The run's JSON data
enters as the database renders it (`data::text`, PostgreSQL's canonical jsonb text), since a
number read back into Python may not print the same again.

A rewrite by someone who also recomputes every later hash is caught only by a copy of the head
kept elsewhere: the summary message in Slack and the exported timeline carry it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS = "0" * 64
ENCODING_VERSION = "rollback-bot incident event v1"


@dataclass(frozen=True)
class ChainedEvent:
    """One stored event as the chain sees it (read with its data as `data::text`)."""

    id: int
    seq: int
    run_id: str
    at: datetime
    actor: str
    source: str
    kind: str
    step: str | None
    data_text: str
    prev_hash: str
    hash: str


def _field(text: str) -> str:
    return f"{len(text.encode('utf-8'))}:{text}"


def encoding(prev_hash: str, seq: int, event_id: int, run_id: str, at: datetime, actor: str,
             source: str, kind: str, step: str | None, data_text: str) -> bytes:
    """The bytes hashed for one event: version, the previous hash, the event's place and every
    field of it, each field length-prefixed so that no two events encode alike."""
    when = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    parts = [ENCODING_VERSION, prev_hash, str(seq), str(event_id), str(run_id), when,
             _field(actor), _field(source), _field(kind),
             "-" if step is None else _field(step), _field(data_text)]
    return "\n".join(parts).encode("utf-8")


def event_hash(prev_hash: str, event: ChainedEvent) -> str:
    return hashlib.sha256(encoding(
        prev_hash, event.seq, event.id, event.run_id, event.at, event.actor, event.source,
        event.kind, event.step, event.data_text)).hexdigest()


@dataclass(frozen=True)
class Break:
    """The first event where the stored log and the recomputed chain part."""

    event_id: int | None
    seq: int
    reason: str

    def describe(self) -> str:
        where = f"event #{self.event_id} (seq {self.seq})" if self.event_id is not None \
            else f"after seq {self.seq}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class ChainVerdict:
    events: int
    head: str  # the last event's recomputed hash (GENESIS for an empty log)
    broken: Break | None
    hashes: tuple[str, ...] = ()  # every recomputed hash, in chain order

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify_chain(events: Iterable[ChainedEvent],
                 stored_head: tuple[int, str] | None = None) -> ChainVerdict:
    """Walk a run's events in `seq` order, recomputing each hash from the one before.

    `stored_head` is the run's (seq, hash) in `incident_chain_heads`: a log cut short at its end
    (the last events deleted) leaves every remaining link whole but no longer reaches it."""
    ordered: Sequence[ChainedEvent] = sorted(events, key=lambda e: (e.seq, e.id))
    previous = GENESIS
    hashes: list[str] = []
    last_id: int | None = None
    for expected_seq, event in enumerate(ordered, start=1):
        broken = _link_break(event, expected_seq, previous, last_id)
        if broken is not None:
            return ChainVerdict(len(hashes), previous, broken, tuple(hashes))
        previous = event.hash
        hashes.append(previous)
        last_id = event.id
    if stored_head is not None and stored_head != (len(hashes), previous):
        head_seq, head_hash = stored_head
        return ChainVerdict(len(hashes), previous, Break(
            None, len(hashes), f"the chain's recorded head is seq {head_seq} "
            f"({head_hash[:16]}…) but the log ends at seq {len(hashes)}: events are missing "
            "at its end, or the head was rewritten"), tuple(hashes))
    return ChainVerdict(len(hashes), previous, None, tuple(hashes))


def _link_break(event: ChainedEvent, expected_seq: int, previous: str,
                last_id: int | None) -> Break | None:
    if event.seq != expected_seq:
        why = "an event is missing before it" if event.seq > expected_seq else "seq repeated"
        return Break(event.id, event.seq, f"expected seq {expected_seq}: {why}")
    if last_id is not None and event.id <= last_id:
        return Break(event.id, event.seq, f"its id comes before the previous event's "
                     f"(#{last_id}): the log was reordered")
    if event.prev_hash != previous:
        return Break(event.id, event.seq, "its prev_hash is not the previous event's hash: an "
                     "event before it was removed, changed or moved")
    recomputed = event_hash(previous, event)
    if recomputed != event.hash:
        return Break(event.id, event.seq, "its content does not match its hash: it was edited")
    return None


@dataclass(frozen=True)
class LogHead:
    """Where a run's chain stood when a view was drawn: a copy to keep outside the database."""

    seq: int
    hash: str


def verify_hint(run_id: str, head: str) -> str:
    """The command that checks the stored log against a copy of its head."""
    return f"rollback-bot verify-log {run_id[:8]} --head {head}"
