"""The rotation ledger read a page at a time: every pair exactly once, in old-hash order; the
notification ledger asked for one page of clients at a time."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import repo_runs
from bot.db.ledgers import SqlNotificationLedger, SqlRotationLedger
from bot.domain.ledgers import NotificationRecord, NotificationStatus
from bot.domain.states import RunStatus


def h(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


async def new_run(sessions: async_sessionmaker[AsyncSession]) -> str:
    """A run row for the ledger's foreign key, ended at once (one run is active at a time)."""
    async with sessions() as s, s.begin():
        run = await repo_runs.create_run(s, initiator_id="U1", initiator_name="alice",
                                         reason="r", source="terminal", channel_id=None)
        run_id = str(run.id)  # type: ignore[union-attr]
        await repo_runs.finish_run(s, run_id, RunStatus.ABORTED, "test")
        return run_id


async def test_pages_give_every_pair_once_across_page_boundaries(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ledger = SqlRotationLedger(bot_sessionmaker)
    run_id, other = await new_run(bot_sessionmaker), await new_run(bot_sessionmaker)
    pairs = {h(f"old-{n}"): h(f"new-{n}") for n in range(23)}
    await ledger.record(run_id, pairs)
    await ledger.record(other, {h("someone else"): h("their key")})

    pages = [page async for page in ledger.pages(run_id, 5)]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    seen = [old for page in pages for old in page]
    assert seen == sorted(pairs), "each pair once, in old-hash order"
    assert {old: new for page in pages for old, new in page.items()} == pairs
    assert await ledger.count(run_id) == 23
    assert [p async for p in ledger.pages(str(await new_run(bot_sessionmaker)), 5)] == []


async def test_recording_a_pair_again_unchanged_leaves_it_untouched(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A resume streams every pair of the work table to the ledger again; only what changed
    is written (its `rotated_at` says when the pair was made)."""
    ledger = SqlRotationLedger(bot_sessionmaker)
    run_id = await new_run(bot_sessionmaker)
    await ledger.record(run_id, {h("a"): h("a2"), h("b"): h("b2")})
    query = text("SELECT old_hash, rotated_at FROM key_rotations WHERE run_id = :r")
    async with bot_sessionmaker() as s:
        before = dict((await s.execute(query, {"r": run_id})).all())
    await ledger.record(run_id, {h("a"): h("a2"), h("b"): h("b3")})
    async with bot_sessionmaker() as s:
        after = dict((await s.execute(query, {"r": run_id})).all())
    assert after[h("a")] == before[h("a")]
    assert after[h("b")] > before[h("b")]
    assert await ledger.mapping(run_id) == {h("a"): h("a2"), h("b"): h("b3")}


async def test_statuses_of_a_page_of_clients_only_theirs_only_this_rotation(
    bot_sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ledger = SqlNotificationLedger(bot_sessionmaker)
    run_id, other = await new_run(bot_sessionmaker), await new_run(bot_sessionmaker)
    await ledger.save(run_id, NotificationRecord(h("a"), NotificationStatus.SENT, "a@x.io"),
                      NotificationRecord(h("b"), NotificationStatus.NO_CONTACT),
                      NotificationRecord(h("c"), NotificationStatus.SENDING, "c@x.io"))
    await ledger.save(other, NotificationRecord(h("d"), NotificationStatus.SENT, "d@x.io"))

    page = [h("a"), h("b"), h("d"), h("never mailed")]
    assert await ledger.statuses(run_id, page) == {
        h("a"): NotificationStatus.SENT, h("b"): NotificationStatus.NO_CONTACT}
    assert await ledger.statuses(run_id, []) == {}
