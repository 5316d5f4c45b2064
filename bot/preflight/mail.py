"""The mail side of `check`: the outbox folder, or the SMTP server as step 5 would meet it."""

from __future__ import annotations

import aiosmtplib

from bot.preflight.lines import TIMEOUT, CheckLine, short, writable
from bot.settings import MailerKind, Settings, SmtpSecurity


async def check_mailer(settings: Settings) -> CheckLine:
    if settings.mailer is MailerKind.OUTBOX:
        return writable("outbox", settings.outbox_dir, "set OUTBOX_DIR to a writable folder")
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    client = aiosmtplib.SMTP(hostname=settings.smtp_host, port=settings.smtp_port,
                             use_tls=settings.smtp_security is SmtpSecurity.TLS,
                             start_tls=False, timeout=TIMEOUT)
    try:
        await client.connect()
        code, _ = await client.ehlo()
        if settings.smtp_security is SmtpSecurity.STARTTLS and not client.supports_extension(
                "starttls"):
            return CheckLine("smtp", False, f"{where} does not offer STARTTLS",
                             "set SMTP_SECURITY to match the server")
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return CheckLine("smtp", False, f"{where} unreachable: {short(exc)}",
                         "check SMTP_HOST/SMTP_PORT/SMTP_SECURITY (or MAILER=outbox)")
    return CheckLine("smtp", True, f"{where} answered EHLO ({code}); no mail sent")
