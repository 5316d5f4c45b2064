"""TLS or nothing to a relay not on this machine: a real aiosmtpd relay on the machine's
non-loopback address, offering AUTH but no STARTTLS (what a man in the middle who strips the
offer leaves). With the default settings nothing is sent past EHLO: no AUTH, no message."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from bot.domain.step_protocol import StepError
from bot.preflight.mail import check_mailer
from bot.rehearsal.postgres import free_port
from steps.email_clients import EmailClientsStep
from steps.mailers import PermanentMailError, build_mailer
from tests.fixtures.sandbox import SandboxSeed
from tests.fixtures.smtp import RecordingHandler, SmtpServer
from tests.steps.step_context import settings_for
from tests.steps.test_mail_canary import mail_settings, rotated
from tests.steps.test_mailers import message

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback: `hostname -I`, else the source
    address a UDP socket would use towards a public address (no packet is sent)."""
    try:
        found = subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                               check=False).stdout.split()
    except OSError:
        found = []
    for address in found:
        if "." in address and not address.startswith("127."):
            return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith(("127.", "0.")) else address


@dataclass
class RemoteRelay:
    server: SmtpServer
    logins: list[bytes] = field(default_factory=list)


@pytest.fixture
def remote_relay() -> Iterator[RemoteRelay]:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind a 'remote' relay to")
    handler = RecordingHandler()
    relay = RemoteRelay(SmtpServer(address, free_port(), handler))

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        relay.logins.append(bytes(getattr(auth_data, "password", b"")))
        return AuthResult(success=True, handled=False)

    controller = Controller(handler, hostname=address, port=relay.server.port,
                            authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()


def relay_settings(relay: RemoteRelay, **extra: Any) -> dict[str, Any]:
    return {"mailer": "smtp", "smtp_host": relay.server.host, "smtp_port": relay.server.port,
            "smtp_username": "bot", "smtp_password": "relay-s3cret", **extra}


@pytest.mark.parametrize("security", ["auto", "none"])
async def test_the_mailer_refuses_a_remote_relay_without_tls_before_any_login(
    remote_relay: RemoteRelay, security: str,
) -> None:
    mailer = build_mailer(settings_for(**relay_settings(remote_relay, smtp_security=security)),
                          "run")
    try:
        with pytest.raises(PermanentMailError, match="SMTP_SECURITY=plaintext") as refused:
            await mailer.send(message())
    finally:
        await mailer.close()
    assert "not on this machine" in str(refused.value)
    assert remote_relay.logins == [], "the password was sent in clear"
    assert remote_relay.server.messages == []


async def test_plaintext_to_a_remote_relay_takes_the_explicit_setting(
    remote_relay: RemoteRelay,
) -> None:
    mailer = build_mailer(settings_for(**relay_settings(remote_relay,
                                                        smtp_security="plaintext")), "run")
    try:
        await mailer.send(message("asked@example.test"))
    finally:
        await mailer.close()
    assert remote_relay.logins == [b"relay-s3cret"]
    assert [m["To"] for m in remote_relay.server.messages] == ["asked@example.test"]


async def test_check_reports_plaintext_to_a_remote_relay_as_a_problem(
    remote_relay: RemoteRelay,
) -> None:
    refused = await check_mailer(settings_for(**relay_settings(remote_relay)))
    assert not refused.ok and refused.blocking
    assert "offers no STARTTLS" in refused.detail and "SMTP_SECURITY" in refused.text()
    asked = await check_mailer(settings_for(**relay_settings(remote_relay,
                                                             smtp_security="plaintext")))
    assert not asked.ok and asked.blocking, "plaintext across a network is never 'ok'"
    assert "in plaintext (SMTP_SECURITY=plaintext)" in asked.detail
    assert remote_relay.logins == [] and remote_relay.server.messages == []


async def test_step_5_fails_before_its_canary_and_mails_nobody(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
    sandbox_api_url: str, remote_relay: RemoteRelay,
) -> None:
    values = mail_settings(phase2_target_url, tmp_path, remote_relay.server, sandbox_seed,
                           sandbox_api_url)
    values.update(smtp_username="bot", smtp_password="relay-s3cret")
    ctx = await rotated(values)
    step = EmailClientsStep()
    plan = await step.plan(ctx)
    where = f"{remote_relay.server.host}:{remote_relay.server.port}"
    assert f"mail goes to {where} with STARTTLS required, certificate verified" in plan.details
    lines: list[str] = []
    with pytest.raises(StepError, match="nobody was mailed") as failure:
        await step.run(ctx, lines.append)
    assert "SMTP_SECURITY=plaintext" in str(failure.value)
    assert not [line for line in lines if line.startswith("canary")], "the canary ran"
    assert remote_relay.logins == [] and remote_relay.server.messages == []
    assert await ctx.notifications.records(ctx.rotation_id) == {}, "a ledger row was written"


async def test_step_5_plan_shows_explicit_plaintext(
    phase2_target_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
    sandbox_api_url: str, remote_relay: RemoteRelay,
) -> None:
    values = mail_settings(phase2_target_url, tmp_path, remote_relay.server, sandbox_seed,
                           sandbox_api_url, smtp_security="plaintext")
    plan = await EmailClientsStep().plan(await rotated(values))
    assert any("IN PLAINTEXT (SMTP_SECURITY=plaintext)" in line for line in plan.details)
    assert any("unencrypted" in warning for warning in plan.warnings)
