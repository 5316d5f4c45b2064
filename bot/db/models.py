"""The bot's own schema: runs, step executions, approvals, the incident log, and the ledgers.

Enum values are stored as VARCHAR with CHECK constraints, so adding a state is a small migration.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.domain.events import EventKind, Source
from bot.domain.follow_ups import FollowUpItem
from bot.domain.ledgers import NotificationStatus
from bot.domain.states import ExecutionKind, RunStatus, StepStatus
from bot.domain.steps import StepName

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, enum: type[StrEnum]) -> str:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return f"{column} IN ({values})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RollbackRun(Base):
    __tablename__ = "rollback_runs"
    __table_args__ = (
        CheckConstraint(one_of("status", RunStatus), name="status"),
        CheckConstraint(one_of("source", Source), name="source"),
        # "Only one rollback at a time on a target" is this index, not a Python lock.
        Index("uq_rollback_runs_one_active", "target", unique=True,
              postgresql_where=text("status = 'active'")),
        Index("ix_rollback_runs_target_created_at", "target", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                          default=uuid.uuid4)
    status: Mapped[str] = mapped_column(String(32))
    initiator_id: Mapped[str] = mapped_column(String(64))
    initiator_name: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[str | None] = mapped_column(String(64))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    current_step: Mapped[str | None] = mapped_column(String(32))
    abort_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The earlier run whose key rotation this run continues (decided when the run is created);
    # NULL: its own. The ledgers of both steps 4 and 5 are keyed by that rotation.
    rotation_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("rollback_runs.id"))
    # Which target (bot/targets.py): `default` when one target is configured.
    target: Mapped[str] = mapped_column(String(32), server_default=text("'default'"))


class StepExecution(Base):
    __tablename__ = "step_executions"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "kind", "attempt", name="uq_step_executions_attempt"),
        CheckConstraint(one_of("status", StepStatus), name="status"),
        CheckConstraint(one_of("step", StepName), name="step"),
        CheckConstraint(one_of("kind", ExecutionKind), name="kind"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True,
                                          default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"), index=True)
    step: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    # `resend`: step 5 sending again to its unconfirmed clients, approved like a step.
    kind: Mapped[str] = mapped_column(String(16), server_default=text("'step'"),
                                      default=ExecutionKind.STEP.value)
    status: Mapped[str] = mapped_column(String(32))
    plan: Mapped[dict[str, Any]] = mapped_column(JSONB)
    plan_fingerprint: Mapped[str] = mapped_column(String(64))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    summary: Mapped[str | None] = mapped_column(Text)
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The target this row belongs to (bot/targets.py); a run's rows take its target in the
    # database (migration 0005_targets's triggers).
    target: Mapped[str] = mapped_column(String(32), server_default=text("'default'"))


class Approval(Base):
    __tablename__ = "approvals"
    __table_args__ = (
        # The same person twice counts once: enforced by the database.
        UniqueConstraint("step_execution_id", "user_id", name="uq_approvals_user"),
        CheckConstraint(one_of("source", Source), name="source"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    step_execution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("step_executions.id"))
    user_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(255))
    plan_fingerprint: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class IncidentEvent(Base):
    """Append-only (a trigger refuses UPDATE and DELETE); `id` is the log's order.

    A hash chain per run makes a rewrite evident: the insert trigger of migration
    0003_event_chain sets `seq`, `prev_hash` and `hash` (never the bot; see
    bot/domain/log_chain.py) under the lock of the run's `incident_chain_heads` row."""

    __tablename__ = "incident_events"
    __table_args__ = (
        CheckConstraint(one_of("kind", EventKind), name="kind"),
        CheckConstraint(one_of("source", Source), name="source"),
        Index("ix_incident_events_run_id_id", "run_id", "id"),
        UniqueConstraint("run_id", "seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class IncidentChainHead(Base):
    """The last link of each run's chain, locked by every insert into the run's log."""

    __tablename__ = "incident_chain_heads"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class SlackOutbox(Base):
    """How far the Slack thread has caught up with the log, per run."""

    __tablename__ = "slack_outbox"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"), primary_key=True)
    last_delivered_event_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class Notification(Base):
    """One row per rotation and client. `run_id` is the rotation's id: the run that began it."""

    __tablename__ = "notifications"
    __table_args__ = (CheckConstraint(one_of("status", NotificationStatus), name="status"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"), primary_key=True)
    client_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    # The target this row belongs to (bot/targets.py); a run's rows take its target in the
    # database (migration 0005_targets's triggers).
    target: Mapped[str] = mapped_column(String(32), server_default=text("'default'"))


class KeyRotation(Base):
    """Old hash -> new hash. Never the key itself. `run_id` is the rotation's id: the run that
    began it (a later run continuing it writes here under that id)."""

    __tablename__ = "key_rotations"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"), primary_key=True)
    old_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    new_hash: Mapped[str] = mapped_column(String(64), unique=True)
    rotated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    # The target this row belongs to (bot/targets.py); a run's rows take its target in the
    # database (migration 0005_targets's triggers).
    target: Mapped[str] = mapped_column(String(32), server_default=text("'default'"))


class ClosedRotation(Base):
    """A key rotation that is over (step 5 done): no later run continues it."""

    __tablename__ = "closed_rotations"

    rotation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"),
                                                   primary_key=True)
    closed_in_run: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"))
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                server_default=func.now())
    facts: Mapped[dict[str, Any]] = mapped_column(JSONB)  # counts at closure (no hash, no key)
    # The target this row belongs to (bot/targets.py); a run's rows take its target in the
    # database (migration 0005_targets's triggers).
    target: Mapped[str] = mapped_column(String(32), server_default=text("'default'"))


class MirrorClaim(Base):
    """Which replica writes a run's Slack thread: a lease in database time (`now()`), renewed
    while the replica lives; `done_at` once the thread shows the whole log."""

    __tablename__ = "mirror_claims"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SlackRefusal(Base):
    """A write Slack refused for good (not an outage), and what the mirror did about it."""

    __tablename__ = "slack_refusals"
    __table_args__ = (Index("ix_slack_refusals_run_id", "run_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    method: Mapped[str] = mapped_column(String(64))
    error: Mapped[str] = mapped_column(String(64))
    what: Mapped[str] = mapped_column(Text)
    handled: Mapped[str] = mapped_column(Text)


class EngineInbox(Base):
    """Clicks as Slack delivered them, written before Slack is told OK: an acknowledged click
    is processed even if the bot dies right after the ack (at the next start, or by another
    replica's watcher). Authorisation and the plan work happen at processing time."""

    __tablename__ = "engine_inbox"
    __table_args__ = (
        CheckConstraint("action IN ('approve', 'retry', 'abort', 'reject', 'resend')",
                        name="action"),
        CheckConstraint(one_of("source", Source), name="source"),
        Index("ix_engine_inbox_unprocessed", "id", postgresql_where=text("processed_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str] = mapped_column(String(64))
    execution_id: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                  server_default=func.now())
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class FollowUp(Base):
    """A post-rollback action of a finished run, once someone owned or closed it (no row: open,
    nobody owns it)."""

    __tablename__ = "follow_ups"
    __table_args__ = (CheckConstraint(one_of("item", FollowUpItem), name="item"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"), primary_key=True)
    item: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    owner_name: Mapped[str | None] = mapped_column(String(255))
    owned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_by_id: Mapped[str | None] = mapped_column(String(64))
    done_by_name: Mapped[str | None] = mapped_column(String(255))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EventDelivery(Base):
    """An incident-log entry carried to an outside target (`pagerduty`, `slack`): written after
    the outside call, which a `delivery_claims` row held meanwhile (never a transaction)."""

    __tablename__ = "event_deliveries"
    __table_args__ = (CheckConstraint("target IN ('pagerduty', 'slack')", name="target"),)

    event_id: Mapped[int] = mapped_column(ForeignKey("incident_events.id"), primary_key=True)
    target: Mapped[str] = mapped_column(String(16), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rollback_runs.id"), index=True)
    delivered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                   server_default=func.now())
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class DeliveryClaim(Base):
    """A delivery in flight: claimed (committed) before the outside call, renewed while it
    waits, removed when `event_deliveries` records it. `takes` above 1: a claim lapsed unrecorded
    (its replica died or stalled), so the next one examines what went out before sending."""

    __tablename__ = "delivery_claims"
    __table_args__ = (CheckConstraint("target IN ('pagerduty', 'slack')", name="target"),)

    event_id: Mapped[int] = mapped_column(ForeignKey("incident_events.id"), primary_key=True)
    target: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())
    takes: Mapped[int] = mapped_column(Integer, server_default=text("1"))
