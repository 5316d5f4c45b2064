"""Mailers against real servers, and the client directory they address."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from bot.domain.step_protocol import StepError
from bot.rehearsal.postgres import free_port
from bot.settings import Settings
from bot.urls import libpq_url
from steps.directory import Contact, load_directory
from steps.mailers import (
    PermanentMailError,
    TransientMailError,
    UncertainMailError,
    build_mailer,
)
from steps.mailers.outbox import OutboxMailer
from steps.mailers.template import Template
from tests.fixtures.smtp import RecordingHandler, SmtpServer
from tests.steps.step_context import settings_for

HASH_A = "a" * 64
HASH_B = "b" * 64


def message(to: str = "client@example.test", tag: str = "aaaaaaaaaaaa") -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"], msg["X-Rollback-Client"] = (
        "hello", "bot@example.test", to, tag)
    msg.set_content("body")
    return msg


def smtp(host: str, port: int, **extra: Any) -> Settings:
    return settings_for(mailer="smtp", smtp_host=host, smtp_port=port, **extra)


async def test_smtp_delivers_and_reuses_its_connection(smtp_server: SmtpServer) -> None:
    mailer = build_mailer(smtp(smtp_server.host, smtp_server.port), "run")
    try:
        await mailer.send(message("one@example.test"))
        await mailer.send(message("two@example.test"))
    finally:
        await mailer.close()
    assert [m["To"] for m in smtp_server.messages] == ["one@example.test", "two@example.test"]


async def test_smtp_classifies_refusals(smtp_server: SmtpServer) -> None:
    smtp_server.fail_permanent("gone@example.test")
    smtp_server.fail_transient("busy@example.test", times=1)
    mailer = build_mailer(smtp(smtp_server.host, smtp_server.port), "run")
    try:
        with pytest.raises(PermanentMailError, match="550"):
            await mailer.send(message("gone@example.test"))
        with pytest.raises(TransientMailError, match="451"):
            await mailer.send(message("busy@example.test"))
        await mailer.send(message("busy@example.test"))  # the second try goes through
    finally:
        await mailer.close()
    assert [m["To"] for m in smtp_server.messages] == ["busy@example.test"]


async def test_smtp_cut_off_after_data_is_uncertain_and_the_next_message_reconnects(
    smtp_server: SmtpServer,
) -> None:
    smtp_server.drop_after_data("cut@example.test")
    mailer = build_mailer(smtp(smtp_server.host, smtp_server.port), "run")
    try:
        with pytest.raises(UncertainMailError, match="after DATA"):
            await mailer.send(message("cut@example.test"))
        await mailer.send(message("next@example.test"))  # a fresh connection, not the dead one
    finally:
        await mailer.close()
    assert [m["To"] for m in smtp_server.messages] == ["cut@example.test", "next@example.test"]


async def test_smtp_unreachable_server_is_transient() -> None:
    mailer = build_mailer(smtp("127.0.0.1", free_port()), "run")
    with pytest.raises(TransientMailError):
        await mailer.send(message())
    await mailer.close()


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"bot", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def auth_server() -> Iterator[SmtpServer]:
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                            authenticator=_authenticate, auth_required=True,
                            auth_require_tls=False)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", controller.port, handler)
    finally:
        controller.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_logs_in_when_a_username_is_set(auth_server: SmtpServer) -> None:
    good = build_mailer(smtp(auth_server.host, auth_server.port, smtp_username="bot",
                             smtp_password="s3cret"), "run")
    await good.send(message())
    await good.close()
    bad = build_mailer(smtp(auth_server.host, auth_server.port, smtp_username="bot",
                            smtp_password="wrong"), "run")
    with pytest.raises(PermanentMailError, match="535"):
        await bad.send(message("other@example.test"))
    await bad.close()
    assert [m["To"] for m in auth_server.messages] == ["client@example.test"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("security", ["auto", "starttls", "tls"])
async def test_smtp_over_tls_verifies_the_server(
    security: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = RecordingHandler()
    # require_starttls: the server refuses mail before the upgrade, so delivery proves it.
    options: dict[str, Any] = ({"tls_context": context, "require_starttls": True}
                               if security in ("auto", "starttls") else {"ssl_context": context})
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        settings = smtp("127.0.0.1", controller.port, smtp_security=security)
        untrusted = build_mailer(settings, "run")
        with pytest.raises(PermanentMailError, match="not trusted"):  # self-signed
            await untrusted.send(message("first@example.test"))
        await untrusted.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusted = build_mailer(settings, "run")
        await trusted.send(message("second@example.test"))
        await trusted.close()
    finally:
        controller.stop()
    assert [m["To"] for m in handler.messages] == ["second@example.test"]


async def test_the_default_security_sends_plaintext_only_when_no_starttls_is_offered(
    smtp_server: SmtpServer,
) -> None:
    """`auto` is the default: against a server without STARTTLS it still delivers."""
    settings = smtp(smtp_server.host, smtp_server.port)
    assert settings.smtp_security == "auto"
    mailer = build_mailer(settings, "run")
    await mailer.send(message("plain@example.test"))
    await mailer.close()
    assert [m["To"] for m in smtp_server.messages] == ["plain@example.test"]


async def test_outbox_writes_one_eml_per_message_atomically(tmp_path: Path) -> None:
    import os

    previous = os.umask(0o000)  # the most permissive umask: files must still be 0600
    try:
        await _outbox_writes(tmp_path)
    finally:
        os.umask(previous)


async def _outbox_writes(tmp_path: Path) -> None:
    mailer = build_mailer(settings_for(mailer="outbox", outbox_dir=tmp_path / "out"),
                          "0123456789-run")
    assert isinstance(mailer, OutboxMailer)
    await asyncio.gather(mailer.send(message("a@example.test", "aaaaaaaaaaaa")),
                         mailer.send(message("b@example.test", "bbbbbbbbbbbb")))
    await mailer.close()
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["01234567-aaaaaaaaaaaa.eml", "01234567-bbbbbbbbbbbb.eml"]
    assert "To: b@example.test" in (tmp_path / "out" / files[1]).read_text()
    for name in files:  # each holds a key: the bot's user only, whatever the umask
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o600


def write_csv(path: Path, text: str) -> Settings:
    path.write_text(text, encoding="utf-8")
    return settings_for(client_directory=path)


async def test_directory_csv_lowercases_and_reports_bad_lines_by_number(tmp_path: Path) -> None:
    settings = write_csv(tmp_path / "c.csv", (
        "\ufeffName,Email,API_Key_SHA256\n"
        f"Acme,ops@acme.test,{HASH_A.upper()}\n"
        "Broken,nobody,{HASH_B}\n"
        f"Short,s@x.test,{HASH_B[:10]}\n"
        "\n"
        f"Acme again,ops@ACME.test,{HASH_A}\n"
        f",b@bee.test,{HASH_B}\n"))
    directory = await load_directory(settings)
    assert {h: (c.name, c.email) for h, c in directory.contacts.items()} == {
        HASH_A: ("Acme", "ops@acme.test"), HASH_B: ("b@bee.test", "b@bee.test")}
    assert [p.split(":")[0] for p in directory.problems] == ["line 3", "line 4", "line 6"]
    assert "already listed on line 2; kept the first" in directory.problems[2]


async def test_directory_refuses_every_address_that_is_not_one_plain_mailbox(
    tmp_path: Path,
) -> None:
    """Each of these once reached the mailer: `a:b@c.de` was delivered to b@c.de, `(x@y.zz`
    and `x@[y.zz` raised inside a worker. Lines are numbered where each row starts."""
    hashes = [f"{n:064x}" for n in range(1, 12)]
    rows = ["name,email,api_key_sha256",
            f"Good,good@example.com,{hashes[0]}",            # line 2
            f"Paren,(x@y.zz,{hashes[1]}",                   # line 3
            f"Bracket,x@[y.zz,{hashes[2]}",                 # line 4
            f"Group,a:b@c.de,{hashes[3]}",                  # line 5
            f'Break,"x@example.com\r\nBcc: all@example.com",{hashes[4]}',  # lines 6-7
            f"Empty,,{hashes[5]}",                          # line 8
            f"Named,Eve <eve@example.com>,{hashes[6]}",     # line 9
            f"Unicode,zoë@example.com,{hashes[7]}",         # line 10
            f"Good again,good@example.com,{hashes[0]}",     # line 11: same hash, same address
            f"Two,one@example.com,{hashes[8]}",             # line 12
            f"Two,two@example.com,{hashes[8]}",             # line 13: same hash, another address
            f"Idn,ops@bücher.example,{hashes[9]}"]          # line 14
    directory = await load_directory(write_csv(tmp_path / "c.csv", "\n".join(rows) + "\n"))
    assert {h: c.email for h, c in directory.contacts.items()} == {
        hashes[0]: "good@example.com", hashes[9]: "ops@xn--bcher-kva.example"}
    numbered = {p.split(":")[0]: p for p in directory.problems}
    assert list(numbered) == [f"line {n}" for n in (3, 4, 5, 6, 8, 9, 10, 11, 13)]
    assert "'(x@y.zz' is not an address" in numbered["line 3"]
    assert "'x@[y.zz' is not an address" in numbered["line 4"]
    assert "'a:b@c.de' is not an address" in numbered["line 5"]
    assert "holds a line break" in numbered["line 6"]
    assert "is empty" in numbered["line 8"]
    assert "kept the first" in numbered["line 11"]
    assert "another address; neither is emailed" in numbered["line 13"]


async def test_directory_csv_header_and_file_problems_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="must have the header name,email,api_key_sha256"):
        await load_directory(write_csv(tmp_path / "c.csv", f"who,mail,hash\nA,a@a.test,{HASH_A}\n"))
    with pytest.raises(StepError, match="does not exist"):
        await load_directory(settings_for(client_directory=tmp_path / "missing.csv"))
    with pytest.raises(StepError, match="no client directory"):
        await load_directory(settings_for())


async def test_directory_from_a_query_on_the_target(empty_db_url: str) -> None:
    conn = await asyncpg.connect(libpq_url(empty_db_url))
    try:
        await conn.execute("CREATE TABLE customers (label text, mail text, key_hash text)")
        await conn.executemany("INSERT INTO customers VALUES ($1, $2, $3)",
                               [("Acme", "ops@acme.test", HASH_A.upper()),
                                ("Nope", "not-an-address", HASH_B)])
    finally:
        await conn.close()
    query = ("SELECT label AS name, mail AS email, key_hash AS api_key_sha256 FROM customers "
             "ORDER BY label")
    directory = await load_directory(settings_for(target_database_url=empty_db_url,
                                                  client_directory_query=query))
    assert {h: c.email for h, c in directory.contacts.items()} == {HASH_A: "ops@acme.test"}
    assert directory.problems == ["query row 2: email 'not-an-address' is not an address: "
                                  "An email address must have an @-sign."]
    with pytest.raises(StepError, match="must return the columns name,email,api_key_sha256"):
        await load_directory(settings_for(target_database_url=empty_db_url,
                                          client_directory_query="SELECT label FROM customers"))
    with pytest.raises(StepError, match="CLIENT_DIRECTORY_QUERY failed on the target"):
        await load_directory(settings_for(target_database_url=empty_db_url,
                                          client_directory_query="SELECT * FROM nowhere"))


async def test_rendered_emails_arrive_whole_each_with_its_own_id(smtp_server: SmtpServer) -> None:
    """Headers parsed once per template still reach every client intact, non-ASCII too."""
    settings = smtp(smtp_server.host, smtp_server.port, mail_from="On Call <oncall@example.test>")
    template = Template.load(settings)
    mailer = build_mailer(settings, "run")
    try:
        for name, address in (("Zoë Ünïcode", "zoe@example.test"), ("Al", "al@example.test")):
            await mailer.send(template.render(settings, Contact(name, address), "KEY-1",
                                              address[:3]))
    finally:
        await mailer.close()
    zoe, al = smtp_server.messages
    assert [m["To"] for m in (zoe, al)] == ["zoe@example.test", "al@example.test"]
    assert {str(m["From"]) for m in (zoe, al)} == {"On Call <oncall@example.test>"}
    assert {m["Subject"] for m in (zoe, al)} == {"URGENT: API Key Rotation Required"}
    assert [m["X-Rollback-Client"] for m in (zoe, al)] == ["zoe", "al@"]
    assert zoe["Message-ID"] != al["Message-ID"]
    assert "Dear Zoë Ünïcode," in str(zoe.get_content())


def test_an_address_with_a_line_break_is_refused_not_sent_as_extra_headers() -> None:
    settings = smtp("127.0.0.1", 25)
    with pytest.raises(ValueError):
        Template.load(settings).render(
            settings, Contact("X", "x@example.test\r\nBcc: all@example.test"), "KEY", "x")
