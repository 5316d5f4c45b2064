"""The rehearsal end to end on a small sandbox: the real engine and the six real steps, approved
from the terminal by two named engineers; then what an engineer would check afterwards."""

from __future__ import annotations

import email
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest

from bot.domain.events import Source
from bot.domain.states import StepStatus
from bot.settings import KeyModel, Settings
from bot.terminal.rehearse import RehearsalOptions, RehearsalResult, rehearse
from bot.urls import libpq_url
from tests.charts.png_checks import bars_painted, read_png, running_bars_match_events
from tests.sandbox.after_rollback import assert_rolled_back, outbox_messages

CLIENTS = 4  # one of them without a contact


async def _keys(target_url: str) -> set[str]:
    conn = await asyncpg.connect(libpq_url(target_url))
    try:
        rows = await conn.fetch(
            "SELECT owner_api_key AS k FROM sessions WHERE owner_api_key IS NOT NULL "
            "UNION SELECT owner_api_key FROM assistants WHERE owner_api_key IS NOT NULL")
    finally:
        await conn.close()
    return {row["k"] for row in rows}


async def _bot_rows_text(bot_url: str) -> str:
    """Every row of every table of the bot's database, as text, for the key scan."""
    conn = await asyncpg.connect(libpq_url(bot_url))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        chunks = []
        for table in tables:
            rows = await conn.fetch(f'SELECT * FROM "{table["tablename"]}"')
            chunks += [json.dumps(dict(row), default=str) for row in rows]
    finally:
        await conn.close()
    return "\n".join(chunks)


@pytest.fixture(params=[("auto", "per_client"), ("local-process", "per_client"),
                        ("auto", "service"), ("local-process", "service")],
                ids=lambda p: "-".join(p))
async def rehearsal(
    request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str
) -> AsyncIterator[tuple[RehearsalResult, str]]:
    for module in ("bot.db.migrate", "sandbox.api", "sandbox.seed", "steps.backup"):
        pytest.importorskip(module, reason=f"{module} (another piece) is not there yet")
    base = Settings(_env_file=None, database_url=pg_admin_url)  # type: ignore[call-arg]
    out = io.StringIO()
    options = RehearsalOptions(
        approvers=("alice", "bob"), initiator="carol", clients=CLIENTS,
        folder=tmp_path / "demo", keep=True,
        use_docker=False if request.param[0] == "local-process" else None,
        key_model=KeyModel(request.param[1]),
    )
    result = await rehearse(options, base, out)
    try:
        yield result, out.getvalue()
    finally:
        if result.sandbox is not None:
            await result.sandbox.tear_down()


async def test_rehearsal_runs_six_steps_approved_by_two_names_and_leaks_no_key(
    rehearsal: tuple[RehearsalResult, str],
) -> None:
    result, printed = rehearsal
    transcript = result.transcript.read_text()
    assert printed == transcript, "the transcript file is what the terminal showed"
    assert result.completed, transcript[-3000:]
    view = result.view
    assert view is not None
    for step in view.steps:
        assert step.status is StepStatus.SUCCEEDED, (step.step, step.summary)
        assert [a.user_name for a in step.approvers] == ["alice", "bob"]
    assert transcript.count("✔ approved 1/2: alice") == 6
    assert transcript.count("✔ approved 2/2: bob") == 6
    assert transcript.count("✓ done:") == 6
    assert "Rollback completed" in transcript and "Post-mortem summary" in transcript

    settings = result.settings
    assert settings.database_url is not None
    bot_url = settings.database_url.get_secret_value()
    conn = await asyncpg.connect(libpq_url(bot_url))
    try:
        approvals = await conn.fetch(
            "SELECT source, kind, data FROM incident_events WHERE kind = 'approval_given'")
    finally:
        await conn.close()
    assert len(approvals) == 12 and {a["source"] for a in approvals} == {Source.TERMINAL.value}

    keys = await _keys(settings.target_database_url.get_secret_value())
    service = settings.key_model is KeyModel.SERVICE
    assert len(keys) == (1 if service else CLIENTS), "one new key per client (per old hash)"
    emails = sorted(settings.outbox_dir.glob("*.eml"))
    assert len(emails) == CLIENTS - 1, "one email per contact"
    mailed = set()
    for path in emails:
        message = email.message_from_bytes(path.read_bytes())
        body = message.get_payload(decode=True) or b""
        found = [key for key in keys if key in body.decode(errors="replace")]
        assert len(found) == 1, path
        mailed.add(found[0])
    assert len(mailed) == (1 if service else CLIENTS - 1)
    seeded = json.loads((result.folder / "phase3-keys.json").read_text())
    contacts = [c["email"] for c in seeded if c["has_contact"]]
    await assert_rolled_back(settings, {c["key"] for c in seeded}, outbox_messages(settings),
                             contacts)
    if service:
        assert "new door key" in transcript and "the door lets the new key in" in transcript
        assert settings.service_env_file is not None
        assert list(settings.service_env_file.parent.glob(
            f".env.before-rollback-{view.run_id[:8]}-*"))
    if settings.redis_url is not None:
        assert "cached sessions removed" in transcript

    assert sorted(settings.backup_dir.glob("backup_before_rollback_*.dump"))
    assert result.timeline is not None and result.timeline.exists()
    picture = result.timeline.with_suffix(".png")
    assert f"picture:    {picture}" in transcript
    image, drawing = read_png(picture.read_bytes())
    bars_painted(image, drawing)
    conn = await asyncpg.connect(libpq_url(bot_url))
    try:
        events = await conn.fetch("SELECT at, kind, step FROM incident_events ORDER BY seq")
    finally:
        await conn.close()
    running_bars_match_events(drawing, [SimpleNamespace(**dict(e)) for e in events])
    # The summary printed the log's chain head; the markdown ends with the head it was made at.
    conn = await asyncpg.connect(libpq_url(bot_url))
    try:
        heads = {r["hash"]: r["seq"] for r in await conn.fetch(
            "SELECT seq, hash FROM incident_events")}
    finally:
        await conn.close()
    printed_head = re.search(r"incident log: (\d+) events, chain head ([0-9a-f]{64})", transcript)
    assert printed_head is not None
    assert heads[printed_head.group(2)] == int(printed_head.group(1))
    last_line = result.timeline.read_text().splitlines()[-1]
    assert re.fullmatch(r"- head \(event \d+, seq (\d+)\): `([0-9a-f]{64})`", last_line)
    assert last_line[-65:-1] in heads
    assert [b["row"] for b in drawing["bars"] if b["kind"] == "running"] == \
        [step.step.value for step in view.steps]
    scanned = [transcript, result.timeline.read_text(), await _bot_rows_text(bot_url)]
    scanned += [p.read_text(errors="replace") for p in (result.folder / "logs").iterdir()
                if p.name != "api.log"]
    for text in scanned:
        for key in keys:
            assert key not in text
