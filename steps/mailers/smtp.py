"""The `smtp` mailer (aiosmtplib): STARTTLS or TLS, optional auth; 4xx retry, 5xx do not,
nor does an untrusted TLS certificate.

`SMTP_SECURITY=auto` (the default) upgrades with STARTTLS whenever the server offers it, and
verifies its certificate like `starttls` does: a message holds a key, and an upgrade an attacker
could intercept is no upgrade. Plaintext is only what the server leaves (no STARTTLS offered) or
what the operator asks for (`none`).

Connections are kept and reused (one per concurrent sender) rather than opened per message:
connect + EHLO + auth dominate the cost of a short email. A connection that saw an error is
dropped, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from email.message import EmailMessage

import aiosmtplib

from bot.settings import Settings, SmtpSecurity
from steps.mailers import PermanentMailError, TransientMailError

# aiosmtplib's start_tls: True = required, None = when offered, False = never.
START_TLS: dict[SmtpSecurity, bool | None] = {
    SmtpSecurity.AUTO: None, SmtpSecurity.STARTTLS: True, SmtpSecurity.TLS: False,
    SmtpSecurity.NONE: False,
}


class SmtpMailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host, port=s.smtp_port, use_tls=s.smtp_security is SmtpSecurity.TLS,
            start_tls=START_TLS[s.smtp_security], timeout=30,
        )
        await client.connect()
        if s.smtp_username:
            password = s.smtp_password.get_secret_value() if s.smtp_password else ""
            await client.login(s.smtp_username, password)
        return client

    async def send(self, message: EmailMessage) -> None:
        try:
            client = self._idle.get_nowait()
        except asyncio.QueueEmpty:
            client = None
        try:
            if client is None or not client.is_connected:
                client = await self._connect()
            await client.send_message(message)
        except aiosmtplib.SMTPResponseException as exc:
            await self._discard(client)
            error = PermanentMailError if 500 <= exc.code < 600 else TransientMailError
            raise error(f"SMTP {exc.code}: {exc.message}") from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._discard(client)
            codes = [r.code for r in exc.recipients]
            error = PermanentMailError if all(500 <= c < 600 for c in codes) \
                else TransientMailError
            raise error(f"recipient refused: {', '.join(str(c) for c in codes)}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._discard(client)
            if _untrusted_certificate(exc):  # a setting to fix, not a moment to wait out
                raise PermanentMailError(f"TLS certificate of {self.settings.smtp_host} not "
                                         f"trusted: {exc}") from None
            raise TransientMailError(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # e.g. a message aiosmtplib will not encode: this one only
            await self._discard(client)
            raise PermanentMailError(f"{type(exc).__name__}: {exc}") from None
        self._idle.put_nowait(client)

    async def _discard(self, client: aiosmtplib.SMTP | None) -> None:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.quit()

    async def close(self) -> None:
        while not self._idle.empty():
            await self._discard(self._idle.get_nowait())


def _untrusted_certificate(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError) \
        or isinstance(exc.__cause__, ssl.SSLCertVerificationError) \
        or "CERTIFICATE_VERIFY_FAILED" in str(exc)
