"""KEY_MODEL=service: the new door key installed where the service reads it, the api restarted,
and the door letting the new key in, before anyone is mailed. On the sandbox api as a real
process that reads its `API_KEY` from its env file at start, like the real service."""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from bot.domain.step_protocol import StepError
from bot.settings import MailerKind, Settings
from bot.urls import libpq_url
from sandbox.seed import write_env_file
from steps.email_clients import EmailClientsStep
from steps.key_installers import (
    DoorKey,
    env_file_value,
    install_by_command,
    install_in_env_file,
)
from steps.rotate_keys import RotateKeysStep
from steps.service_key import KeyModelRotation, choose_service_hash
from steps.verify import VerifyStep
from tests.fixtures.smtp import SmtpServer
from tests.steps.sandbox_settings import sandbox_settings
from tests.steps.service_api import ServiceApi, get, local_service_api
from tests.steps.step_context import settings_for, step_context


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def door_key(value: str) -> DoorKey:
    return DoorKey(value, sha(value))


# --- the installers ------------------------------------------------------------------------


def test_env_file_line_rewritten_atomically_with_mode_owner_and_a_private_copy(
    tmp_path: Path,
) -> None:
    env = tmp_path / ".env"
    original = ("# settings\nDEBUG=true\nexport API_KEY=\"old-key\"\r\n"
                "CORS_ORIGINS=*\nAPI_KEY_HEADER=X-API-Key\n")
    env.write_bytes(original.encode())
    env.chmod(0o640)
    owner = (1000, 1000) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    os.chown(env, *owner)
    key = door_key(str(uuid.uuid4()))
    run_id = str(uuid.uuid4())

    facts = install_in_env_file(env, "API_KEY", key, run_id)

    text = env.read_bytes().decode()  # byte for byte: the CRLF line keeps its CRLF
    assert text == original.replace('export API_KEY="old-key"', f"export API_KEY={key.value}")
    assert env_file_value(text, "API_KEY") == key.value
    info = env.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and (info.st_uid, info.st_gid) == owner
    kept = Path(facts["previous_kept_as"])
    assert kept.parent == tmp_path and kept.read_bytes().decode() == original
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert facts["line"] == "rewritten" and facts["mode"] == "0640"
    assert key.value not in repr(facts) and key.value not in repr(key)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", kept.name], "no temp file left"

    again = door_key(str(uuid.uuid4()))  # a Retry: the copy still holds the file before the run
    install_in_env_file(env, "API_KEY", again, run_id)
    assert kept.read_bytes().decode() == original
    assert env_file_value(env.read_text(), "API_KEY") == again.value


def test_env_file_without_the_line_gets_it_appended(tmp_path: Path) -> None:
    env = tmp_path / "service.env"
    env.write_text("DEBUG=true")
    key = door_key("k" * 36)
    facts = install_in_env_file(env, "API_KEY", key, str(uuid.uuid4()))
    assert facts["line"] == "appended"
    assert env.read_text() == f"DEBUG=true\nAPI_KEY={key.value}\n"


def test_env_file_missing_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="cannot read the service's env file"):
        install_in_env_file(tmp_path / "nope.env", "API_KEY", door_key("x"), str(uuid.uuid4()))


async def test_command_installer_gets_the_key_on_stdin_and_its_output_is_masked(
    tmp_path: Path,
) -> None:
    received = tmp_path / "received"
    script = tmp_path / "install.sh"
    script.write_text(f'#!/bin/sh\nread KEY\necho "got $KEY"\necho "$KEY" > {received}\n'
                      'echo "args: $*"\n')
    script.chmod(0o755)
    key = door_key(str(uuid.uuid4()))
    lines: list[str] = []
    facts = await install_by_command(f"{script} --service api", key, lines.append)
    assert received.read_text().strip() == key.value
    assert "got ********" in lines and "args: --service api" in lines
    assert all(key.value not in line for line in lines) and key.value not in repr(facts)

    failing = tmp_path / "fail.sh"
    failing.write_text('#!/bin/sh\nread KEY\necho "refused $KEY"\nexit 3\n')
    failing.chmod(0o755)
    with pytest.raises(StepError, match=r"exit 3\): refused \*\*\*\*\*\*\*\*") as err:
        await install_by_command(str(failing), key, lines.append)
    assert key.value not in str(err.value)


def test_several_old_hashes_are_refused_unless_one_is_named() -> None:
    olds = [sha("a"), sha("b")]
    with pytest.raises(StepError, match="installs ONE door key, but the rows carry 2 old"):
        choose_service_hash(settings_for(key_model="service"), olds)
    named = settings_for(key_model="service", service_key_old_hash=sha("b")[:10].upper())
    assert choose_service_hash(named, olds) == sha("b")
    with pytest.raises(StepError, match="matches none"):
        choose_service_hash(settings_for(service_key_old_hash="0" * 12), olds)
    assert choose_service_hash(settings_for(), [sha("a")]) == sha("a")


# --- step 4 against the sandbox api with a door ---------------------------------------------


@dataclass(frozen=True)
class DoorSandbox:
    url: str
    env_file: Path
    old_key: str
    api: ServiceApi
    settings: Settings


async def _one_owner(url: str, key_hash: str) -> None:
    """Every row under the one door key's hash, as on the real service."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        for table in ("sessions", "assistants"):
            await conn.execute(f"UPDATE {table} SET owner_api_key_hash = $1", key_hash)
    finally:
        await conn.close()


async def _rows(url: str) -> tuple[int, set[str | None]]:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        count = await conn.fetchval("SELECT count(*) FROM sessions")
        keys = {r[0] for r in await conn.fetch("SELECT DISTINCT owner_api_key FROM sessions "
                                               "UNION SELECT owner_api_key FROM assistants")}
    finally:
        await conn.close()
    return count, keys


@pytest.fixture
async def door_sandbox(phase2_target_url: str, tmp_path: Path, redis_url: str,
                       cache_prefix: str) -> AsyncIterator[DoorSandbox]:
    old_key = str(uuid.uuid4())
    await _one_owner(phase2_target_url, sha(old_key))
    env_file = tmp_path / "service" / ".env"
    write_env_file(env_file, old_key)
    async with local_service_api(tmp_path / "api", phase2_target_url, env_file=env_file,
                                 redis_url=redis_url, cache_prefix=cache_prefix) as api:
        settings = sandbox_settings(
            phase2_target_url, tmp_path, key_model="service", service_env_file=env_file,
            restart_strategy="command", restart_command=api.restart_command,
            api_base_url=api.base_url, redis_url=redis_url,
            cache_session_pattern=f"{cache_prefix}session:*",
            cache_owner_key=f"{cache_prefix}session:owner:{{hash}}")
        yield DoorSandbox(phase2_target_url, env_file, old_key, api, settings)


async def test_service_model_installs_the_door_key_and_restarts_before_anything_is_mailed(
    door_sandbox: DoorSandbox,
) -> None:
    box = door_sandbox
    base = box.api.base_url
    assert (await get(base, "/api/v1/sessions", str(uuid.uuid4())))[0] == 401, "a door"
    status, before = await get(base, "/api/v1/sessions", box.old_key)  # fills the cache
    assert status == 200 and before["total"] == 18
    pid_before = box.api.process.pidfile.read_text()
    step = KeyModelRotation(RotateKeysStep())
    ctx = step_context(box.settings)

    plan = await step.plan(ctx)
    assert plan.facts["key_model"] == "service" and plan.facts["installer"] == "env-file"
    assert plan.facts["door_key_of"] == sha(box.old_key)[:8] and not plan.warnings
    assert any("becomes the service's door key" in d for d in plan.details)
    assert any(str(box.env_file) in d and "restart the api again" in d for d in plan.details)

    lines: list[str] = []
    outcome = await step.run(ctx, lines.append)

    count, keys = await _rows(box.url)
    (new_key,) = keys
    assert new_key is not None and new_key != box.old_key
    assert env_file_value(box.env_file.read_text(), "API_KEY") == new_key
    status, after = await get(base, "/api/v1/sessions", new_key)
    assert status == 200 and after["total"] == count == 18, "the new key sees every row"
    status, refused = await get(base, "/api/v1/sessions", box.old_key)
    assert status == 401 and refused["error"]["message"] == "Invalid API key"
    assert box.api.process.pidfile.read_text() != pid_before, "the api was restarted"
    facts = outcome.facts
    assert facts["service_key"]["file"] == str(box.env_file)
    assert facts["service_key"]["new_hash"] == sha(new_key)[:8]
    assert facts["service_restart"]["healthy_after_s"] >= 0
    assert facts["service_restart"]["healthy_at"] > facts["service_restart"]["restarted_at"]
    assert facts["cache"]["owner_keys_removed"] == 1 and facts["cache"]["remaining"] == 0
    assert facts["cache"]["sessions_removed"] == 18, "the sessions the old key had read"
    assert "api restarted" in outcome.summary
    for text in (*lines, outcome.summary, repr(facts)):
        assert new_key not in text
    assert (await step.check(ctx)).done


async def test_a_key_the_door_does_not_read_fails_the_step_and_check_says_not_done(
    door_sandbox: DoorSandbox, tmp_path: Path,
) -> None:
    """The service's process environment sets API_KEY (it beats the .env file): the new key is
    installed but still refused at the door, so the step fails before step 5 could mail it."""
    box = door_sandbox
    script = Path(box.api.process.script)
    script.write_text(script.read_text().replace(
        "nohup", f"API_KEY={box.old_key} nohup"))
    step = KeyModelRotation(RotateKeysStep())
    ctx = step_context(box.settings)
    with pytest.raises(StepError, match=r"door answers the new key with 401.*nobody has been "
                                        r"mailed"):
        await step.run(ctx, lambda line: None)
    check = await step.check(ctx)
    assert not check.done and "door answers the new key with 401" in check.reason


async def test_several_old_hashes_stop_the_step_before_any_row_changes(
    door_sandbox: DoorSandbox,
) -> None:
    box = door_sandbox
    conn = await asyncpg.connect(libpq_url(box.url))
    try:  # rows written under an earlier API_KEY keep that key's hash
        await conn.execute("UPDATE assistants SET owner_api_key_hash = $1", sha("earlier key"))
    finally:
        await conn.close()
    step = KeyModelRotation(RotateKeysStep())
    ctx = step_context(box.settings)
    plan = await step.plan(ctx)
    assert any("installs ONE door key, but the rows carry 2 old hashes" in w
               for w in plan.warnings)
    with pytest.raises(StepError, match="SERVICE_KEY_OLD_HASH"):
        await step.run(ctx, lambda line: None)
    assert (await _rows(box.url))[1] == {None}, "no row was touched"
    named = box.settings.model_copy(update={"service_key_old_hash": sha(box.old_key)[:12]})
    ctx = step_context(named)
    await step.run(ctx, lambda line: None)
    _, keys = await _rows(box.url)
    assert len(keys) == 2, "one new key per old hash"
    door = env_file_value(box.env_file.read_text(), "API_KEY")
    assert door in keys and (await get(box.api.base_url, "/api/v1/sessions", door))[1][
        "total"] == 18
    (other,) = keys - {door}
    assert other is not None
    assert (await get(box.api.base_url, "/api/v1/sessions", other))[0] == 401



async def test_the_canary_and_verify_try_only_the_door_key_which_is_the_one_mailed(
    door_sandbox: DoorSandbox, tmp_path: Path, smtp_server: SmtpServer,
) -> None:
    """Two old hashes, the door key's named: the other hash's new key is refused at the door by
    design and mailed to nobody, so neither step 5's canary nor step 6 may sample it."""
    box = door_sandbox
    conn = await asyncpg.connect(libpq_url(box.url))
    try:
        await conn.execute("UPDATE assistants SET owner_api_key_hash = $1", sha("earlier key"))
    finally:
        await conn.close()
    directory = tmp_path / "clients.csv"
    directory.write_text("name,email,api_key_sha256\n"
                         f"Ops,ops@example.test,{sha(box.old_key)}\n"
                         f"Dana,dana@example.test,{sha(box.old_key)}\n"
                         f"Eve,eve@example.test,{sha('earlier key')}\n", encoding="utf-8")
    settings = box.settings.model_copy(update={
        "service_key_old_hash": sha(box.old_key)[:12], "verify_sample_size": 50,
        "client_directory": directory, "mailer": MailerKind.SMTP, "smtp_host": smtp_server.host,
        "smtp_port": smtp_server.port})
    ctx = step_context(settings)
    await KeyModelRotation(RotateKeysStep()).run(ctx, lambda line: None)
    door = env_file_value(box.env_file.read_text(), "API_KEY")

    plan = await EmailClientsStep().plan(ctx)
    assert f"GET {box.api.base_url}/api/v1/sessions with 1 of the new keys" in plan.details[-1]
    lines: list[str] = []
    outcome = await EmailClientsStep().run(ctx, lines.append)
    assert outcome.facts["canary"] == {"sampled": 1, "of": 1, "random_key_status": 401}
    assert sorted(str(m["To"]) for m in smtp_server.messages) == [
        "dana@example.test", "ops@example.test"]
    assert all(door in m.get_content() for m in smtp_server.messages)

    verified = await VerifyStep().run(ctx, lines.append)
    assert verified.facts["sampled"] == 1 and verified.facts["passed"] == [sha(door)[:8]]
    _, keys = await _rows(box.url)
    for text in (*lines, repr(dict(outcome.facts)), repr(dict(verified.facts))):
        assert not [key for key in keys if key and key in text]


# --- the directory: everyone who shares the door key ------------------------------------------


async def test_service_model_keeps_every_address_listed_under_one_hash(tmp_path: Path) -> None:
    from steps.directory import contact_id, fan_out, load_directory

    csv = tmp_path / "c.csv"
    h = sha("the door key")
    csv.write_text("name,email,api_key_sha256\n"
                   f"Ops,ops@example.com,{h}\n"
                   f"Dana,dana@example.com,{h}\n"
                   f"Ops again,ops@EXAMPLE.com,{h}\n"
                   f"Bad,a:b@c.de,{h}\n")
    per_client = await load_directory(settings_for(client_directory=csv))
    assert per_client.contacts == {}, "per client: two addresses for one client mail neither"
    directory = await load_directory(settings_for(client_directory=csv, key_model="service"))
    assert directory.contacts[h].email == "ops@example.com"
    assert [c.email for c in directory.more[h]] == ["dana@example.com"]
    assert [p.split(":")[0] for p in directory.problems] == ["line 4", "line 5"]
    recipients, fanned = fan_out({h: "n" * 64}, directory)
    assert recipients == {h: "n" * 64, contact_id(h, "dana@example.com"): "n" * 64}
    assert fanned.contacts[contact_id(h, "dana@example.com")].name == "Dana"


async def test_rows_the_old_api_wrote_after_the_sweep_get_the_new_door_key(
    door_sandbox: DoorSandbox, tmp_path: Path,
) -> None:
    """Until its restart the api still lets the old door key in. A client that writes just
    then (here: the restart command itself first writes a session as the old api would, with
    the old key and its hash) must not be left owning rows under a key nobody is mailed."""
    box = door_sandbox
    late_id = uuid.uuid4()
    writer = tmp_path / "late_write.py"
    writer.write_text(
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1])\n"
        "    await conn.execute(\"INSERT INTO sessions (id, model, owner_api_key, \"\n"
        "        \"owner_api_key_hash) VALUES ($1, 'm', $2, $3)\", sys.argv[2], sys.argv[3],\n"
        "        sys.argv[4])\n"
        "    await conn.close()\n"
        "asyncio.run(main())\n")
    write_late = (f"{sys.executable} {writer} {libpq_url(box.url)} {late_id} {box.old_key} "
                  f"{sha(box.old_key)}")
    settings = box.settings.model_copy(update={
        "restart_command": f"sh -c {shlex.quote(f'{write_late} && {box.api.restart_command}')}"})
    step = KeyModelRotation(RotateKeysStep())
    lines: list[str] = []
    outcome = await step.run(step_context(settings), lines.append)

    count, keys = await _rows(box.url)
    (new_key,) = keys
    assert count == 19 and new_key != box.old_key, "the late row too carries the new key"
    status, after = await get(box.api.base_url, "/api/v1/sessions", new_key)
    assert status == 200 and after["total"] == 19, "the new key owns the late session"
    assert outcome.facts["late_rows_rekeyed"] == 1
    assert "1 row written with the old door key after the sweep, before the restart, " \
           "re-keyed" in lines
