"""`rollback-bot check`: each dependency gets a line; a problem names itself and its fix."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from bot.preflight import (
    CheckLine,
    check_api,
    check_directory,
    check_mailer,
    check_pg_dump,
    check_restart,
    check_target_revision,
    check_work_table,
    stops_rollback,
    target_facts,
)
from bot.rehearsal.postgres import free_port
from bot.settings import Settings
from steps.downgrade import unexpected_revision
from steps.email_clients import EmailClientsStep
from steps.restart import RestartStep
from tests.fixtures.http import serving
from tests.fixtures.postgres import DatabaseFactory, admin_execute
from tests.steps.step_context import step_context


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def target_at(databases: DatabaseFactory, revision: str | None) -> str:
    url = await databases.create("preflight")
    statements = [
        "CREATE TABLE sessions (id serial PRIMARY KEY, owner_api_key_hash varchar(64))",
        "CREATE TABLE assistants (id text PRIMARY KEY, owner_api_key_hash varchar(64))",
        f"INSERT INTO sessions (owner_api_key_hash) VALUES ('{sha('a')}'), ('{sha('b')}'), "
        f"('{sha('a')}')",
        f"INSERT INTO assistants VALUES ('asst_1', '{sha('c')}')",
    ]
    if revision:
        statements += ["CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
                       f"INSERT INTO alembic_version VALUES ('{revision}')"]
    await admin_execute(url, *statements)
    return url


async def revision_line(url: str) -> CheckLine:
    s = settings(target_database_url=url)
    return check_target_revision(s, await target_facts(s))


async def test_target_at_phase3_head_is_ok_and_at_phase2_is_ok_with_a_note(
    databases: DatabaseFactory,
) -> None:
    line = await revision_line(await target_at(databases, "9ddfdd63af30"))
    assert line.ok and "Phase 3 head 9ddfdd63af30" in line.detail
    line = await revision_line(await target_at(databases, "20260201_000006"))
    assert line.ok and "downgrade will be skipped" in line.detail


async def test_a_phase3_revision_below_the_head_is_ok_as_step_2_undoes_it(
    databases: DatabaseFactory,
) -> None:
    """Step 2 downgrades from any Phase 3 revision; `check` used to call that a problem."""
    line = await revision_line(await target_at(databases, "0c6d1a600bb1"))
    assert line.ok, line.text()
    assert "Phase 3 revision 0c6d1a600bb1" in line.detail
    assert "undoes 0c6d1a600bb1, 20260208_000007" in line.detail


async def test_target_at_wrong_revision_is_a_problem_naming_both_revisions(
    databases: DatabaseFactory,
) -> None:
    line = await revision_line(await target_at(databases, "20260201_000007"))
    assert not line.ok and line.blocking and stops_rollback([line])
    assert "20260201_000007" in line.detail and "9ddfdd63af30" in line.detail
    assert "PROBLEM target database" in line.text() and "fix:" in line.text()


async def test_target_down_is_a_problem() -> None:
    line = await revision_line(f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x")
    assert not line.ok and "unreachable" in line.detail
    assert "s3cret" not in line.text()


async def test_a_target_user_that_cannot_create_the_work_schema_is_a_problem(
    databases: DatabaseFactory,
) -> None:
    url = await target_at(databases, "9ddfdd63af30")
    line = await check_work_table(settings(target_database_url=url))
    assert line is not None and line.ok and "may create the schema rollback_bot" in line.detail
    role = "rb_preflight_no_create"
    await admin_execute(url, f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN")
    try:
        limited = url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        assert limited != url
        line = await check_work_table(settings(target_database_url=limited))
        assert line is not None and not line.ok and stops_rollback([line])
        assert f"{role} may not create the schema rollback_bot" in line.detail
        assert "GRANT CREATE ON DATABASE" in line.fix
        await admin_execute(url, f"CREATE SCHEMA rollback_bot AUTHORIZATION {role}")
        line = await check_work_table(settings(target_database_url=limited))
        assert line is not None and line.ok, "its own schema is enough"
    finally:
        await admin_execute(url, "DROP SCHEMA IF EXISTS rollback_bot", f"DROP ROLE {role}")


async def test_pg_dump_older_than_the_server_is_a_problem() -> None:
    assert (await check_pg_dump(settings(), 15)).ok
    old = await check_pg_dump(settings(), 99)
    assert not old.ok and "older than the target server 99" in old.detail


def clients_csv(folder: Path, *rows: tuple[str, str, str]) -> Path:
    """A CSV directory of (name, email, key) rows, listed by the key's hash."""
    path = folder / "clients.csv"
    path.write_text("name,email,api_key_sha256\n"
                    + "".join(f"{name},{email},{sha(key)}\n" for name, email, key in rows))
    return path


async def test_client_directory_counts_hashes_with_a_contact(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    url = await target_at(databases, "9ddfdd63af30")
    directory = clients_csv(tmp_path, ("A", "a@example.com", "a"), ("C", "c@example.com", "c"))
    line = await check_directory(settings(target_database_url=url, client_directory=directory))
    assert line.ok and "2 of 3 client hashes have a contact" in line.detail
    missing = await check_directory(settings(target_database_url=url))
    assert not missing.ok and "CLIENT_DIRECTORY" in missing.detail


async def test_with_both_directory_settings_check_and_step_5_name_the_same_clients(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    """Step 5 prefers the query and refuses its bad rows; `check` must say exactly that."""
    url = await target_at(databases, "9ddfdd63af30")
    csv_file = clients_csv(tmp_path, ("A", "a@example.com", "a"), ("B", "b@example.com", "b"))
    query = ("SELECT * FROM (VALUES ('C', 'c@example.com', '" + sha("c") + "'),"
             " ('A', 'nobody', '" + sha("a") + "')) AS v(name, email, api_key_sha256)")
    s = settings(target_database_url=url, client_directory=csv_file,
                 client_directory_query=query, mailer="outbox", outbox_dir=tmp_path / "out")
    plan = await EmailClientsStep().plan(step_context(s))
    assert plan.facts["recipients"] == 1 and plan.facts["without_contact"] == 2
    assert plan.warnings == ("query row 2: email 'nobody' is not an address: An email address "
                             "must have an @-sign.",)
    line = await check_directory(s)
    assert "1 of 3 client hashes have a contact (CLIENT_DIRECTORY_QUERY)" in line.detail
    assert line.notes == plan.warnings
    assert not line.ok and not line.blocking, "a refused row is worth a warning, not a stop"
    assert "query row 2: email 'nobody' is not an address" in line.text()


async def test_smtp_answers_ehlo_and_a_closed_port_is_a_problem() -> None:
    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            raise AssertionError("the check must not send mail")

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        line = await check_mailer(settings(smtp_host="127.0.0.1", smtp_port=port))
    finally:
        controller.stop()
    assert line.ok and "answered EHLO" in line.detail
    down = await check_mailer(settings(smtp_host="127.0.0.1", smtp_port=free_port()))
    assert not down.ok and "unreachable" in down.detail


async def test_smtp_security_lines_say_how_mail_would_travel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ssl
    import subprocess

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            raise AssertionError("the check must not send mail")

    plain = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tls = Controller(Sink(), hostname="127.0.0.1", port=free_port(), tls_context=context)
    plain.start()
    tls.start()
    try:
        line = await check_mailer(settings(smtp_host="127.0.0.1", smtp_port=plain.port))
        assert line.ok and "in plaintext (SMTP_SECURITY=auto)" in line.detail, "a loopback relay"
        line = await check_mailer(settings(smtp_host="127.0.0.1", smtp_port=plain.port,
                                           smtp_security="none"))
        assert line.ok, "plaintext to a loopback relay is fine"
        line = await check_mailer(settings(smtp_host="127.0.0.1", smtp_port=plain.port,
                                           smtp_security="starttls"))
        assert not line.ok and line.blocking and "does not offer STARTTLS" in line.detail
        line = await check_mailer(settings(smtp_host="127.0.0.1", smtp_port=tls.port))
        assert not line.ok and "certificate not trusted" in line.detail, line.text()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        line = await check_mailer(settings(smtp_host="127.0.0.1", smtp_port=tls.port))
        assert line.ok and "with STARTTLS, certificate verified" in line.detail, line.text()
    finally:
        plain.stop()
        tls.stop()


@pytest.mark.parametrize(("security", "loopback", "allowed"), [
    ("none", False, False),      # no TLS to another host: refused, names `plaintext`
    ("none", True, True),        # to a relay on this machine: fine
    ("auto", False, False),      # the server offered no STARTTLS: refused
    ("auto", True, True),
    ("starttls", False, False),
    ("plaintext", False, True),  # explicitly (check reports it as a problem)
])
def test_plaintext_crosses_a_network_only_when_asked_for(
    security: str, loopback: bool, allowed: bool,
) -> None:
    from bot.settings import SmtpSecurity
    from steps.mailers.transport import plaintext_allowed

    assert plaintext_allowed(SmtpSecurity(security), loopback) is allowed


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
    ("[::1]", True), ("::ffff:127.0.0.1", True), ("192.0.2.25", False), ("2001:db8::1", False),
])
async def test_loopback_hosts(host: str, loopback: bool) -> None:
    from bot.preflight.mail import is_loopback

    assert await is_loopback(host) is loopback


async def test_outbox_mailer_needs_a_writable_folder(tmp_path: Path) -> None:
    line = await check_mailer(settings(mailer="outbox", outbox_dir=tmp_path / "out"))
    assert line.ok and (tmp_path / "out").is_dir()


@pytest.fixture
async def health_server() -> AsyncIterator[str]:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    async with serving(app) as base_url:
        yield base_url


async def test_api_health_answers_and_a_dead_url_is_a_problem(health_server: str) -> None:
    assert (await check_api(settings(api_base_url=health_server))).ok
    dead = await check_api(settings(api_base_url=f"http://127.0.0.1:{free_port()}"))
    assert not dead.ok and "unreachable" in dead.detail


async def test_restart_command_must_exist() -> None:
    assert (await check_restart(settings(restart_strategy="command",
                                         restart_command="sh -c true"))).ok
    line = await check_restart(settings(restart_strategy="command",
                                        restart_command="/nonexistent/restart-api"))
    assert not line.ok and "not found" in line.detail


async def test_docker_matches_api_containers_by_compose_labels(
    docker: aiodocker.Docker, host_image: str
) -> None:
    from tests.fixtures.docker import host_binds

    project = f"rbcheck{free_port()}"
    container = await docker.containers.run(config={
        "Image": host_image, "Cmd": ["/bin/sleep", "300"],
        "Labels": {"com.docker.compose.project": project, "com.docker.compose.service": "api"},
        "HostConfig": {"NetworkMode": "host", "Binds": host_binds()},
    })
    try:
        line = await check_restart(settings(api_compose_project=project))
        assert line.ok and "1 running api container(s)" in line.detail
        none = await check_restart(settings(api_compose_project=project + "-other"))
        assert not none.ok and "no api container matches" in none.detail
        assert project + "-other" in none.detail
    finally:
        await container.delete(force=True)


@pytest.mark.docker
async def test_a_container_whose_name_only_contains_the_configured_name_is_never_matched(
    docker: aiodocker.Docker, host_image: str
) -> None:
    """Docker's `name` filter is a pattern (`api` matches `api-old`; `.` matches any
    character): neither step 3 nor `check` may restart such a container."""
    from tests.fixtures.docker import host_binds

    wanted = f"rb{free_port()}.api"
    decoys = [f"{wanted}-old", f"old-{wanted}", wanted.replace(".", "x")]
    started = []
    try:
        for name in decoys:
            started.append(await docker.containers.run(name=name, config={
                "Image": host_image, "Cmd": ["/bin/sleep", "300"],
                "HostConfig": {"NetworkMode": "host", "Binds": host_binds()}}))
        s = settings(api_container_name=wanted)
        line = await check_restart(s)
        assert not line.ok and f"no api container matches container name {wanted!r}" \
            in line.detail, line.text()
        plan = await RestartStep().plan(step_context(s))
        assert plan.facts["containers"] == []
        assert any("no container matches" in w for w in plan.warnings)

        started.append(await docker.containers.run(name=wanted, config={
            "Image": host_image, "Cmd": ["/bin/sleep", "300"],
            "HostConfig": {"NetworkMode": "host", "Binds": host_binds()}}))
        line = await check_restart(s)
        assert line.ok and line.detail.endswith(f": {wanted}"), line.text()
        plan = await RestartStep().plan(step_context(s))
        assert plan.facts["containers"] == [wanted]
    finally:
        for container in started:
            await container.delete(force=True)


# --- against a whole sandbox: the same stand-up the rehearsal uses ------------------------


@pytest.fixture
async def sandbox_settings(
    tmp_path: Path, pg_admin_url: str, docker_host: str
) -> AsyncIterator[Settings]:
    import io

    for module in ("bot.db.migrate", "sandbox.api", "sandbox.seed"):
        pytest.importorskip(module, reason=f"{module} (another piece) is not there yet")
    from bot.rehearsal.sandbox import stand_up

    base = settings(database_url=pg_admin_url)
    sandbox = await stand_up(base, tmp_path, 3, io.StringIO(), use_docker=True)
    try:
        yield sandbox.settings
    finally:
        await sandbox.tear_down()


async def run_check(s: Settings) -> tuple[int, str]:
    import io

    from bot.preflight import check

    out = io.StringIO()
    return await check(s, out), out.getvalue()


async def test_check_against_a_healthy_sandbox_exits_0(sandbox_settings: Settings) -> None:
    code, text = await run_check(sandbox_settings)
    assert code == 0, text
    for name in ("bot database", "target database", "pg_dump", "docker", "outbox",
                 "client directory", "api"):
        assert f"ok      {name}:" in text, text
    assert "2 of 3 client hashes have a contact" in text
    assert "Ready: nothing here would stop a rollback." in text


async def test_check_names_each_problem_and_exits_non_zero(sandbox_settings: Settings) -> None:
    down = sandbox_settings.model_copy(update={"target_database_url": SecretStr(
        f"postgresql://postgres@127.0.0.1:{free_port()}/gone")})
    code, text = await run_check(down)
    assert code == 1 and "PROBLEM target database:" in text and "unreachable" in text

    no_api = sandbox_settings.model_copy(update={"api_compose_project": "no-such-project"})
    code, text = await run_check(no_api)
    assert code == 1 and "PROBLEM docker: no api container matches" in text

    target = sandbox_settings.target_database_url.get_secret_value()
    await admin_execute(target, "UPDATE alembic_version SET version_num = '20260201_000007'")
    code, text = await run_check(sandbox_settings)
    assert code == 1 and "PROBLEM target database:" in text
    assert unexpected_revision(sandbox_settings, "20260201_000007") in text, text
