"""The mail side of `check`: the outbox folder, or the SMTP server as step 5 would meet it.

For SMTP the check opens the connection exactly as step 5 does (`steps.mailers.transport`):
connect, EHLO and the TLS step 5 would insist on, so an untrusted certificate, or a relay not
on this machine without STARTTLS (refused by step 5 before any login), shows here and not
mid-rollback. `SMTP_SECURITY=plaintext` to such a relay is a problem line: it works, and every
new key crosses the network readable.
"""

from __future__ import annotations

import ssl

import aiosmtplib

from bot.preflight.lines import TIMEOUT, CheckLine, short, writable
from bot.settings import MailerKind, Settings, SmtpSecurity
from steps.mailers.transport import PlaintextRefused, is_loopback, open_smtp

__all__ = ["check_mailer", "is_loopback"]


async def check_mailer(settings: Settings) -> CheckLine:
    if settings.mailer is MailerKind.OUTBOX:
        return writable("outbox", settings.outbox_dir, "set OUTBOX_DIR to a writable folder")
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        connection = await open_smtp(settings, TIMEOUT)
        await connection.client.quit()
    except PlaintextRefused as exc:
        return CheckLine("smtp", False, str(exc), "set SMTP_SECURITY to match the server")
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
                exc):
            return CheckLine("smtp", False, f"{where}: TLS certificate not trusted "
                             f"({short(exc)})", "install the relay's CA (SSL_CERT_FILE) or fix "
                             "its certificate")
        return CheckLine("smtp", False, f"{where} unreachable: {short(exc)}",
                         "check SMTP_HOST/SMTP_PORT/SMTP_SECURITY (or MAILER=outbox)")
    how = ("over TLS" if settings.smtp_security is SmtpSecurity.TLS else
           "with STARTTLS, certificate verified" if connection.encrypted else
           f"in plaintext (SMTP_SECURITY={settings.smtp_security.value})")
    detail = f"{where} answered EHLO ({connection.ehlo_code}); mail would go {how}; no mail sent"
    if not connection.encrypted and not await is_loopback(settings.smtp_host):
        return CheckLine("smtp", False, detail + ": the relay is not on this machine and the "
                         "SMTP password and every new key would cross the network readable",
                         "enable STARTTLS on the relay and use SMTP_SECURITY=auto or starttls "
                         "(or tls on port 465)")
    return CheckLine("smtp", True, detail)
