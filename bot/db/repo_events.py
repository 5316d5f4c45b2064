"""The incident log (append-only) and the Slack mirror's cursor into it. Never commits."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Text, cast, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import IncidentChainHead, IncidentEvent, RollbackRun, SlackOutbox
from bot.domain.events import EventKind, Source
from bot.domain.log_chain import ChainedEvent
from bot.domain.steps import StepName


def _uuid(value: str | uuid.UUID) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


async def append_event(
    session: AsyncSession, run_id: str | uuid.UUID, actor: str, source: Source,
    kind: EventKind, step: StepName | str | None, data: dict[str, Any],
) -> int:
    result = await session.execute(
        insert(IncidentEvent).values(
            run_id=_uuid(run_id), actor=actor, source=Source(source).value,
            kind=kind.value, step=str(step) if step is not None else None, data=data,
        ).returning(IncidentEvent.id)
    )
    return int(result.scalar_one())


async def events_after(
    session: AsyncSession, run_id: str, after_id: int, limit: int = 500
) -> list[IncidentEvent]:
    query = (select(IncidentEvent)
             .where(IncidentEvent.run_id == _uuid(run_id), IncidentEvent.id > after_id)
             .order_by(IncidentEvent.id).limit(limit))
    return list((await session.execute(query)).scalars())


async def all_events(session: AsyncSession, run_id: str) -> list[IncidentEvent]:
    query = (select(IncidentEvent).where(IncidentEvent.run_id == _uuid(run_id))
             .order_by(IncidentEvent.id))
    return list((await session.execute(query)).scalars())


async def events_of_kind(session: AsyncSession, run_id: str, kind: EventKind
                         ) -> list[IncidentEvent]:
    query = (select(IncidentEvent).where(IncidentEvent.run_id == _uuid(run_id),
                                         IncidentEvent.kind == kind.value)
             .order_by(IncidentEvent.id))
    return list((await session.execute(query)).scalars())


def _output_query(run_id: str, execution_id: str):  # type: ignore[no-untyped-def]
    return select(IncidentEvent.data).where(
        IncidentEvent.run_id == _uuid(run_id),
        IncidentEvent.kind == EventKind.STEP_OUTPUT.value,
        IncidentEvent.data["execution_id"].astext == execution_id,
    )


async def output_summary(
    session: AsyncSession, run_id: str, execution_id: str, tail: int
) -> tuple[list[str], int]:
    """The last `tail` output lines of an execution and how many lines it printed in all."""
    batches = (await session.execute(
        _output_query(run_id, execution_id).order_by(IncidentEvent.id.desc()).limit(tail)
    )).scalars().all()
    lines: list[str] = []
    for data in batches:  # newest batch first
        lines[:0] = data.get("lines", [])
        if len(lines) >= tail:
            break
    total = 0
    if batches:
        newest = batches[0]
        total = int(newest.get("first", 0)) + len(newest.get("lines", []))
    return lines[-tail:], total


async def output_tail(
    session: AsyncSession, run_id: str, execution_id: str, tail: int
) -> list[str]:
    return (await output_summary(session, run_id, execution_id, tail))[0]


async def all_output(session: AsyncSession, run_id: str, execution_id: str) -> list[str]:
    lines: list[str] = []
    result = await session.stream_scalars(
        _output_query(run_id, execution_id).order_by(IncidentEvent.id)
    )
    async for data in result:
        lines.extend(data.get("lines", []))
    return lines


async def outbox_cursor(session: AsyncSession, run_id: str) -> int:
    query = select(SlackOutbox.last_delivered_event_id).where(
        SlackOutbox.run_id == _uuid(run_id)
    )
    return int((await session.execute(query)).scalar() or 0)


async def advance_outbox(session: AsyncSession, run_id: str, event_id: int) -> None:
    statement = insert(SlackOutbox).values(run_id=_uuid(run_id), last_delivered_event_id=event_id)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[SlackOutbox.run_id],
        set_={"last_delivered_event_id": func.greatest(
            SlackOutbox.last_delivered_event_id, statement.excluded.last_delivered_event_id),
            "updated_at": func.now()},
    ))


async def chained_events(session: AsyncSession, run_id: str) -> list[ChainedEvent]:
    """A run's events as the chain is recomputed from them: data as the database renders it."""
    query = (select(IncidentEvent.id, IncidentEvent.seq, IncidentEvent.run_id, IncidentEvent.at,
                    IncidentEvent.actor, IncidentEvent.source, IncidentEvent.kind,
                    IncidentEvent.step, cast(IncidentEvent.data, Text), IncidentEvent.prev_hash,
                    IncidentEvent.hash)
             .where(IncidentEvent.run_id == _uuid(run_id)).order_by(IncidentEvent.seq))
    return [ChainedEvent(row[0], row[1], str(row[2]), *row[3:])
            for row in (await session.execute(query)).all()]


async def chain_head(session: AsyncSession, run_id: str) -> tuple[int, str] | None:
    """The run's recorded head (seq, hash), None before its first event."""
    row = (await session.execute(
        select(IncidentChainHead.seq, IncidentChainHead.head_hash)
        .where(IncidentChainHead.run_id == _uuid(run_id)))).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


async def runs_matching(session: AsyncSession, prefix: str) -> list[str]:
    """Run ids starting with `prefix` (people type the 8 characters the thread shows)."""
    query = (select(RollbackRun.id).where(cast(RollbackRun.id, Text).startswith(prefix.lower()))
             .order_by(RollbackRun.created_at.desc()).limit(5))
    return [str(run_id) for run_id in (await session.execute(query)).scalars()]
