"""Key rotation at scale: our step against the runbook's own SQL, on identical copies, same run.

A Phase 2 target (the state after the downgrade: owner_api_key NULL, hashes set, the real
indexes) with SESSIONS sessions and ASSISTANTS assistants over CLIENTS distinct owners is built
once as a template; each contender gets its own copy. Reported: wall time and the ratio, the
longest transaction that wrote to sessions or assistants (how long row locks can be held) and
the longest transaction of any kind (ours makes its keys in one that reads those tables and
writes only its work table) — both watched from outside, in pg_stat_activity and pg_locks,
every 20 ms — and the bot process's peak memory.

Two floors show what Postgres itself needs: every owned row rewritten once with a constant (no
key, no join, no hash; index maintenance included), by one statement per table, and by WORKERS
connections over equal shares of the pages (what this machine's cores allow).

    python -m bench.rotation [--sessions 1000000 --assistants 200000 --clients 100000
                              --txn-seconds 0.5 --workers 3]
    python -m bench.rotation --sizes 0.12M,1.2M,12M

`--sizes` gives the scaling curve: at each total of rows (five sixths sessions, one sixth
assistants, twelve rows per client, as the default target) the runbook, the floor over WORKERS
connections and ours, each on its own copy, then one line per size. The single-statement floor
is left out there (it is the slowest floor and says nothing the other does not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from bench.rotation_writer import Writer, quantile
from bot.urls import libpq_url, with_database
from sandbox.migrate import migrate
from steps.target_sql import TABLE_PAGES_SQL

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
WRITER_ALONE_SECONDS = 10.0
OWNED = "owner_api_key_hash IS NOT NULL"
RUNBOOK_SQL = (
    f"UPDATE sessions SET owner_api_key = gen_random_uuid()::text WHERE {OWNED}",
    f"UPDATE assistants SET owner_api_key = gen_random_uuid()::text WHERE {OWNED}",
)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(libpq_url(ADMIN))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def build_template(name: str, sessions: int, assistants: int, clients: int) -> None:
    await admin(f'CREATE DATABASE "{name}"')
    url = with_database(ADMIN, name)
    await migrate(url, "20260201_000006")  # the schema the downgrade leaves behind
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(f"""
            INSERT INTO sessions (id, model, owner_api_key_hash)
            SELECT gen_random_uuid(), 'claude-sonnet',
                   encode(sha256(('client-' || (g % {clients}))::bytea), 'hex')
            FROM generate_series(1, {sessions}) g;
            INSERT INTO assistants (id, model, owner_api_key_hash)
            SELECT 'asst_' || g, 'claude-sonnet',
                   encode(sha256(('client-' || ((g * 7) % {clients}))::bytea), 'hex')
            FROM generate_series(1, {assistants}) g;
        """)
        for table_name in ("sessions", "assistants"):
            await conn.execute(f"VACUUM ANALYZE {table_name}")
    finally:
        await conn.close()


async def copy_of(template: str, tag: str) -> str:
    name = f"{template}_{tag}"
    await admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return with_database(ADMIN, name)


async def pages_of(url: str, table: str) -> int:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return int(await conn.fetchval(TABLE_PAGES_SQL, table))
    finally:
        await conn.close()


async def floor_statements(url: str, workers: int) -> list[tuple[str, ...]]:
    """A constant into every owned row: one statement per table per worker, equal page shares."""
    shares: list[list[str]] = [[] for _ in range(workers)]
    for table in ("sessions", "assistants"):
        pages = await pages_of(url, table)
        for n, share in enumerate(shares):
            first, end = pages * n // workers, pages * (n + 1) // workers
            share.append(f"UPDATE {table} SET owner_api_key = 'x' WHERE {OWNED} "
                         f"AND ctid >= '({first},0)' AND ctid < '({end},0)'")
    return [tuple(share) for share in shares]


async def statements(url: str, parts: list[tuple[str, ...]]) -> dict[str, float]:
    """Each part on its own connection, all at once; each statement is its own transaction."""
    async def part(sqls: tuple[str, ...]) -> None:
        conn = await asyncpg.connect(libpq_url(url))
        try:
            for sql in sqls:
                await conn.execute(sql)
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(part(p) for p in parts))
    return {"seconds": time.perf_counter() - started}


async def ours(url: str, txn_seconds: float, workers: int, writer: Writer | None = None
               ) -> dict[str, float]:
    """Our step in a fresh process, so its peak memory is its own, with its SQL ledger in a bot
    database of its own. With a `writer`: the writer runs alone for WRITER_ALONE_SECONDS first
    (its latency without the rotation), then on through the keys and the pages, and stops when
    the step says its sweep begins (rows it wrote until then must all be found)."""
    bot_db = f"bench_rot_bot_{uuid.uuid4().hex[:6]}"
    await admin(f'CREATE DATABASE "{bot_db}"')
    try:
        if writer is not None:
            await writer.start()
            await asyncio.sleep(WRITER_ALONE_SECONDS)
            writer.rotating = True
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.rotation_worker", url, with_database(ADMIN, bot_db),
            str(txn_seconds), str(workers), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        async for line in proc.stderr:
            if writer is not None and line.startswith(b"SWEEP"):
                await writer.stop()
        out = (await proc.stdout.read()).decode()
        if await proc.wait() != 0:
            raise RuntimeError(f"bench.rotation_worker failed: {out[-2000:]}")
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        if writer is not None:
            result.update(writer_figures(writer, await writer.not_rekeyed()))
        return result
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{bot_db}" WITH (FORCE)')


# After a kill and a resume: rows whose hash is not their key's sha256 (an old hash, or no
# key), distinct keys against distinct hashes (one key per client), work tables left.
REKEYED_SQL = """
    WITH owned AS (SELECT owner_api_key AS k, owner_api_key_hash AS h FROM sessions
                    WHERE owner_api_key_hash IS NOT NULL
                   UNION ALL
                   SELECT owner_api_key, owner_api_key_hash FROM assistants
                    WHERE owner_api_key_hash IS NOT NULL)
    SELECT count(*) FILTER (WHERE k IS NULL OR h <> encode(sha256(k::bytea), 'hex'))
             AS old_hashes,
           count(DISTINCT k) AS keys, count(DISTINCT h) AS hashes,
           (SELECT count(*) FROM pg_tables WHERE schemaname = 'rollback_bot') AS work_tables
      FROM owned"""


async def killed_and_resumed(url: str, txn_seconds: float, workers: int, after_batches: int
                             ) -> dict[str, float]:
    """SIGKILL of the step's process after `after_batches` committed ranges, then the same
    rotation run again to its end: what the target holds then."""
    bot_db = f"bench_rot_bot_{uuid.uuid4().hex[:6]}"
    await admin(f'CREATE DATABASE "{bot_db}"')
    args = [sys.executable, "-m", "bench.rotation_worker", url, with_database(ADMIN, bot_db),
            str(txn_seconds), str(workers)]
    try:
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None
        run_id, batches = "", 0
        async for line in proc.stderr:
            if line.startswith(b"RUN "):
                run_id = line.split()[1].decode()
            batches += line.startswith(b"BATCH")
            if batches >= after_batches:
                proc.kill()
                break
        await proc.wait()
        resumed = await asyncio.create_subprocess_exec(
            *args, run_id, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await resumed.communicate()
        if resumed.returncode != 0:
            raise RuntimeError(f"the resume failed: {out.decode()[-2000:]}")
        result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        conn = await asyncpg.connect(libpq_url(url))
        try:
            row = await conn.fetchrow(REKEYED_SQL)
        finally:
            await conn.close()
        assert row is not None
        return {**result, "killed_after": batches, **{k: float(v) for k, v in row.items()}}
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{bot_db}" WITH (FORCE)')


def writer_figures(writer: Writer, not_rekeyed: int) -> dict[str, float]:
    w = writer.writes
    return {"w_rate": w.rate(), "w_rows": len(w.ids), "w_not_rekeyed": not_rekeyed,
            "w_errors": len(w.errors),
            **{f"w_{when}_{q}": quantile(values, p) * 1000
               for when, values in (("alone", w.alone), ("rotating", w.rotating))
               for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}}


async def watched(database: str, contender: Callable[[], Awaitable[dict[str, float]]]
                  ) -> dict[str, float]:
    """Runs a contender while sampling its database's open transactions every 20 ms: the oldest
    of all, and the oldest of those holding a write lock on sessions or assistants."""
    longest = writing = 0.0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal longest, writing
        conn = await asyncpg.connect(libpq_url(with_database(ADMIN, database)))
        try:
            while not stop.is_set():
                row = await conn.fetchrow("""
                    SELECT max(extract(epoch FROM clock_timestamp() - a.xact_start)) AS any,
                           max(extract(epoch FROM clock_timestamp() - a.xact_start))
                             FILTER (WHERE EXISTS (
                               SELECT 1 FROM pg_locks l WHERE l.pid = a.pid
                                  AND l.mode = 'RowExclusiveLock' AND l.relation IN
                                      ('sessions'::regclass, 'assistants'::regclass))) AS writing
                      FROM pg_stat_activity a
                     WHERE a.datname = current_database() AND a.xact_start IS NOT NULL
                       AND a.pid <> pg_backend_pid()""")
                assert row is not None
                longest = max(longest, float(row["any"] or 0))
                writing = max(writing, float(row["writing"] or 0))
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    before = await server_counters()
    watcher = asyncio.create_task(watch())
    try:
        result = await contender()
    finally:
        stop.set()
        await watcher
    after = await server_counters()
    return {**result, "longest_tx": longest, "longest_writing_tx": writing,
            **{k: after[k] - before[k] for k in after}}


# The whole server's (other databases' work counts too): WAL written, checkpoints forced by WAL
# volume (max_wal_size) rather than by time, buffers the backends had to write out themselves.
SERVER_COUNTERS_SQL = """
    SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') / 1048576.0 AS wal_mb,
           checkpoints_req::float AS checkpoints_req, buffers_backend::float AS buffers_backend
      FROM pg_stat_bgwriter"""


async def server_counters() -> dict[str, float]:
    conn = await asyncpg.connect(libpq_url(ADMIN))
    try:
        row = await conn.fetchrow(SERVER_COUNTERS_SQL)
    finally:
        await conn.close()
    assert row is not None
    return {k: float(v) for k, v in row.items()}


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def rows_of(text: str) -> int:
    """'0.12M' -> 120000, '12M' -> 12000000, '500k' -> 500000, '1200' -> 1200."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return round(float(text[:-1] if scale > 1 else text) * scale)


@dataclass(frozen=True)
class Target:
    sessions: int
    assistants: int
    clients: int

    @classmethod
    def of_rows(cls, rows: int) -> Target:
        return cls(rows * 5 // 6, rows // 6, max(rows // 12, 1))

    @property
    def rows(self) -> int:
        return self.sessions + self.assistants

    def label(self) -> str:
        return (f"{self.sessions:,} sessions, {self.assistants:,} assistants, "
                f"{self.clients:,} clients")


async def measure(target: Target, txn_seconds: float, workers: int, *, floor1: bool,
                  writer_rate: float = 0.0, runbook: bool = True, kill_after: int = 0
                  ) -> dict[str, dict[str, float]]:
    """Each contender on its own copy of one template; the template and copies dropped after."""
    template = f"bench_rot_{uuid.uuid4().hex[:6]}"
    created = [template]
    try:
        t0 = time.perf_counter()
        await build_template(template, target.sessions, target.assistants, target.clients)
        print(f"built the target ({target.label()}) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        results: dict[str, dict[str, float]] = {}

        async def contender(tag: str, run: Callable[[str], Awaitable[dict[str, float]]]
                            ) -> None:
            url = await copy_of(template, tag)
            created.append(f"{template}_{tag}")
            results[tag] = await watched(f"{template}_{tag}", lambda: run(url))
            await admin(f'DROP DATABASE IF EXISTS "{template}_{tag}" WITH (FORCE)')
            print(f"  {tag}: {results[tag]['seconds']:.1f} s", file=sys.stderr)

        if runbook:
            await contender("runbook", lambda url: statements(url, [RUNBOOK_SQL]))
        if floor1:
            async def one(url: str) -> dict[str, float]:
                return await statements(url, await floor_statements(url, 1))
            await contender("floor1", one)

        async def spread(url: str) -> dict[str, float]:
            return await statements(url, await floor_statements(url, workers))
        await contender("floorN", spread)
        await contender("ours", lambda url: ours(url, txn_seconds, workers))
        await contender("floorN_after", spread)  # the machine's drift across ours
        results["floor"] = floor_of(results["floorN"], results["floorN_after"])
        if writer_rate:
            await contender("ours_writer", lambda url: ours(
                url, txn_seconds, workers, Writer(url, target.clients, writer_rate)))
        if kill_after:
            await contender("killed", lambda url: killed_and_resumed(
                url, txn_seconds, workers, kill_after))
        return results
    finally:
        for name in reversed(created):
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def floor_of(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The floor ours is held to: the mean of the runs before and after it (the machine is
    shared: its load drifts), and how far apart they were."""
    return {"seconds": (before["seconds"] + after["seconds"]) / 2,
            "drift": after["seconds"] / before["seconds"],
            "longest_writing_tx": max(before["longest_writing_tx"], after["longest_writing_tx"]),
            "longest_tx": max(before["longest_tx"], after["longest_tx"]),
            **{k: (before[k] + after[k]) / 2 for k in ("wal_mb", "checkpoints_req",
                                                        "buffers_backend")}}


def contender_table(target: Target, results: dict[str, dict[str, float]], workers: int) -> str:
    mine, floor = results["ours"], results["floor"]

    def row(label: str, result: dict[str, float]) -> tuple[str, ...]:
        return (label, f"{result['seconds']:.1f} s",
                f"{result['seconds'] / floor['seconds']:.2f}",
                f"{result['longest_writing_tx']:.2f} s", f"{result['longest_tx']:.2f} s",
                f"{result['wal_mb']:,.0f} MB", f"{result['checkpoints_req']:.0f}",
                f"{result['buffers_backend'] * 8 / 1024:,.0f} MB")

    rows = [("contender", "time", "ratio to the floor", "longest writing transaction",
             "longest transaction", "WAL (server)", "checkpoints forced",
             "written by backends")]
    if "runbook" in results:
        rows.append(row("runbook SQL: a key per ROW (wrong), one UPDATE per table",
                        results["runbook"]))
    if "floor1" in results:
        rows.append(row("floor: a constant into every owned row, one UPDATE per table",
                        results["floor1"]))
    rows += [row(f"floor: the same over {workers} connections, equal page shares (before)",
                 results["floorN"]),
             row("floor: the same, after ours", results["floorN_after"]),
             row(f"rollback-bot: a key per client ({mine['clients']:,.0f}), "
                 f"{mine['batches']:,.0f} transactions", mine)]
    if "ours_writer" in results:
        rows.append(row("rollback-bot with the concurrent writer", results["ours_writer"]))
    text = (f"Key rotation: {target.label()}\n\n{table(rows)}\n\nours / floor over {workers} "
            f"connections (mean of before and after, {floor['seconds']:.1f} s; after / before "
            f"{floor['drift']:.2f}): {mine['seconds'] / floor['seconds']:.2f}; "
            f"{target.rows / mine['seconds']:,.0f} rows/s (floor "
            f"{target.rows / floor['seconds']:,.0f}); writing transactions as the step timed "
            f"them: p50 {mine['txn_p50_s']:.2f} s, p90 {mine['txn_p90_s']:.2f} s, p99 "
            f"{mine['txn_p99_s']:.2f} s, max {mine['longest_batch_s']:.2f} s, "
            f"{mine['cut_short']:.0f} cut short at 1.8 x the target; ours by phase: "
            f"keys {mine['keys_s']:.1f} s, pages {mine['pages_s']:.1f} s, sweep and check "
            f"{mine['sweep_s']:.1f} s; bot peak memory (RSS): {mine['max_rss_mb']:.0f} MB "
            f"({mine['rss_before_mb']:.0f} MB before the step)")
    if "ours_writer" in results:
        w = results["ours_writer"]
        text += (f"\n\nConcurrent writer ({w['w_rate']:.0f} writes/s, half inserts, half "
                 f"updates, {w['w_errors']:.0f} errors): latency without the rotation p50 "
                 f"{w['w_alone_p50']:.1f} ms, p99 {w['w_alone_p99']:.1f} ms, max "
                 f"{w['w_alone_max']:.1f} ms; while it runs p50 {w['w_rotating_p50']:.1f} ms, "
                 f"p99 {w['w_rotating_p99']:.1f} ms, max {w['w_rotating_max']:.1f} ms; "
                 f"{w['w_rows']:,.0f} rows written, {w['w_not_rekeyed']:.0f} left with an old "
                 f"hash; step with the writer {w['seconds']:.1f} s, longest writing "
                 f"transaction {w['longest_writing_tx']:.2f} s")
    if "killed" in results:
        k = results["killed"]
        text += (f"\n\nSIGKILL after {k['killed_after']:.0f} committed ranges, then resumed: "
                 f"{k['clients']:,.0f} clients keyed by the resume in {k['seconds']:.1f} s; "
                 f"{k['old_hashes']:.0f} rows left with an old hash or no key, "
                 f"{k['keys']:,.0f} distinct keys for {k['hashes']:,.0f} distinct hashes "
                 f"(clients), {k['work_tables']:.0f} work tables left")
    return text


def curve_table(curve: list[tuple[Target, dict[str, dict[str, float]]]], workers: int) -> str:
    rows: list[tuple[str, ...]] = [
        ("rows", "clients", "runbook", f"floor, {workers} connections (before / after)",
         "rollback-bot",
         "ours / floor", "rows/s", "txn p50 / p90 / p99", "longest writing transaction",
         "bot peak RSS")]
    for target, r in curve:
        mine = r["ours"]
        runbook = f"{r['runbook']['seconds']:.1f} s" if "runbook" in r else "—"
        rows.append((f"{target.rows:,}", f"{target.clients:,}", runbook,
                     f"{r['floorN']['seconds']:.1f} / {r['floorN_after']['seconds']:.1f} s",
                     f"{mine['seconds']:.1f} s",
                     f"{mine['seconds'] / r['floor']['seconds']:.2f}",
                     f"{target.rows / mine['seconds']:,.0f}",
                     f"{mine['txn_p50_s']:.2f} / {mine['txn_p90_s']:.2f} / "
                     f"{mine['txn_p99_s']:.2f} s",
                     f"{mine['longest_writing_tx']:.2f} s", f"{mine['max_rss_mb']:.0f} MB"))
    return table(rows)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--assistants", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--sizes", default="",
                        help="a scaling curve instead, e.g. 0.12M,1.2M,12M (rows in all)")
    parser.add_argument("--txn-seconds", type=float, default=0.5,
                        help="ROTATION_TARGET_TXN_SECONDS")
    parser.add_argument("--workers", type=int, default=3, help="ROTATION_WORKERS")
    parser.add_argument("--writer-rate", type=float, default=250.0,
                        help="writes/s of the concurrent writer (0: none)")
    parser.add_argument("--writer-sizes", default="1.2M",
                        help="with --sizes: the sizes at which ours runs again with the writer")
    parser.add_argument("--kill-sizes", default="",
                        help="with --sizes: the sizes at which ours is also SIGKILLed mid-way "
                             "and resumed")
    parser.add_argument("--kill-after", type=int, default=40,
                        help="committed ranges before the SIGKILL")
    parser.add_argument("--no-runbook-above", default="",
                        help="with --sizes: leave the runbook out above this many rows")
    args = parser.parse_args()
    if not args.sizes:
        target = Target(args.sessions, args.assistants, args.clients)
        results = await measure(target, args.txn_seconds, args.workers, floor1=True,
                                writer_rate=args.writer_rate)
        print(contender_table(target, results, args.workers))
        return
    curve = []
    for size in args.sizes.split(","):
        target = Target.of_rows(rows_of(size.strip()))
        writer = {rows_of(w.strip()) for w in args.writer_sizes.split(",") if w.strip()}
        limit = rows_of(args.no_runbook_above) if args.no_runbook_above else None
        kills = {rows_of(k.strip()) for k in args.kill_sizes.split(",") if k.strip()}
        results = await measure(target, args.txn_seconds, args.workers, floor1=False,
                                writer_rate=args.writer_rate if target.rows in writer else 0.0,
                                runbook=limit is None or target.rows <= limit,
                                kill_after=args.kill_after if target.rows in kills else 0)
        print(contender_table(target, results, args.workers) + "\n", flush=True)
        curve.append((target, results))
    print(f"Scaling ({args.workers} workers, {args.txn_seconds:g} s per transaction aimed at)"
          f"\n\n{curve_table(curve, args.workers)}")


if __name__ == "__main__":
    asyncio.run(main())
