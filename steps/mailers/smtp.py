"""The `smtp` mailer (aiosmtplib): STARTTLS or TLS, optional auth; 4xx retry, 5xx do not,
nor does an untrusted TLS certificate.

How the connection is opened (TLS to a relay not on this machine, or nothing before any
login) is `steps.mailers.transport.open_smtp`: a message holds a key, and an upgrade an
attacker could strip is no upgrade.

The transaction is spelled out (MAIL FROM, RCPT TO, then DATA) so that `before_data` runs
after the server accepted every recipient and before DATA: until then a crash leaves nothing
the server could deliver, so the client is safe to send again. Once DATA has started, only an
answer from the server is certain (a 4xx/5xx reply: it did not take the message); a timeout or
a dropped connection is `UncertainMailError` and is never retried: the relay may have
delivered it already.

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
from aiosmtplib.email import extract_recipients, extract_sender, flatten_message

from bot.settings import Settings
from steps.mailers import (
    BeforeData,
    MarkNotWritten,
    PermanentMailError,
    TransientMailError,
    UncertainMailError,
)
from steps.mailers.transport import open_smtp


class SmtpMailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = (await open_smtp(s, wait_seconds=30)).client  # PlaintextRefused before any AUTH
        if s.smtp_username:
            password = s.smtp_password.get_secret_value() if s.smtp_password else ""
            await client.login(s.smtp_username, password)
        return client

    async def send(self, message: EmailMessage, before_data: BeforeData | None = None) -> None:
        try:
            client = self._idle.get_nowait()
        except asyncio.QueueEmpty:
            client = None
        try:
            if client is None or not client.is_connected:
                client = await self._connect()
            await _transaction(client, message, before_data)
        except MarkNotWritten:
            await self._discard(client)  # no DATA was sent: the server delivers nothing
            raise
        except UncertainMailError:
            await self._discard(client)
            raise
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


async def _transaction(client: aiosmtplib.SMTP, message: EmailMessage,
                       before_data: BeforeData | None) -> None:
    """What `send_message` does, with `before_data` between the last RCPT and DATA."""
    sender, recipients = extract_sender(message), extract_recipients(message)
    if sender is None or not recipients:
        raise ValueError("a message needs a From and a To")
    await client._ehlo_or_helo_if_needed()
    options = ["BODY=8BITMIME"] if client.supports_extension("8BITMIME") else []
    flat = flatten_message(message, cte_type="8bit" if options else "7bit")
    try:
        await client.mail(sender, options=options)
        refused: list[aiosmtplib.SMTPRecipientRefused] = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused.append(exc)
        if refused:  # one recipient per message: any refusal means no DATA
            raise aiosmtplib.SMTPRecipientsRefused(refused)
        if before_data is not None:
            await before_data()
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused,
            MarkNotWritten):
        with contextlib.suppress(Exception):
            await client.rset()
        raise
    try:
        await client.data(flat)
    except aiosmtplib.SMTPResponseException:
        raise  # the server answered: it refused the message, nothing was delivered
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise UncertainMailError(f"{type(exc).__name__} after DATA had started: {exc}"
                                 ) from None


def _untrusted_certificate(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError) \
        or isinstance(exc.__cause__, ssl.SSLCertVerificationError) \
        or "CERTIFICATE_VERIFY_FAILED" in str(exc)
