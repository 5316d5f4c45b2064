"""The `smtp` mailer (aiosmtplib): STARTTLS or TLS, optional auth; 4xx retry, 5xx do not."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from bot.settings import Settings, SmtpSecurity
from steps.mailers import PermanentMailError, TransientMailError


class SmtpMailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        s = self.settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        try:
            await aiosmtplib.send(
                message, hostname=s.smtp_host, port=s.smtp_port,
                use_tls=s.smtp_security is SmtpSecurity.TLS,
                start_tls=s.smtp_security is SmtpSecurity.STARTTLS,
                username=s.smtp_username or None, password=password if s.smtp_username else None,
                timeout=30,
            )
        except aiosmtplib.SMTPResponseException as exc:
            error = PermanentMailError if 500 <= exc.code < 600 else TransientMailError
            raise error(f"SMTP {exc.code}: {exc.message}") from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            error = PermanentMailError if all(500 <= c < 600 for c in codes) \
                else TransientMailError
            raise error(f"recipient refused: {', '.join(str(c) for c in codes)}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientMailError(f"{type(exc).__name__}: {exc}") from None
