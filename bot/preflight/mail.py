"""The mail side of `check`: the outbox folder, or the SMTP server as step 5 would meet it.

For SMTP the check goes as far as step 5 would before a message: connect, EHLO, and the STARTTLS
upgrade when step 5 would make it, so an untrusted certificate shows here and not mid-rollback.
Keys in plaintext across a network are worth a warning: with `none` explicitly, or with `auto`
when the server offers no STARTTLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl

import aiosmtplib

from bot.preflight.lines import TIMEOUT, CheckLine, short, writable
from bot.settings import MailerKind, Settings, SmtpSecurity

S = SmtpSecurity


async def is_loopback(host: str) -> bool:
    """Whether every address `host` names is on this machine (a name that does not resolve
    is not)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return _loopback(host.strip("[]"))
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                             type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(found) and all(_loopback(str(f[4][0])) for f in found)


def _loopback(address: str) -> bool:
    parsed = ipaddress.ip_address(address.split("%")[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1
    return parsed.is_loopback


def plaintext_risk(security: SmtpSecurity, upgraded: bool, loopback: bool) -> bool:
    """Would new keys cross a network unencrypted? (`none`, or `auto` without STARTTLS.)"""
    plaintext = security is S.NONE or (security is S.AUTO and not upgraded)
    return plaintext and not loopback


async def check_mailer(settings: Settings) -> CheckLine:
    if settings.mailer is MailerKind.OUTBOX:
        return writable("outbox", settings.outbox_dir, "set OUTBOX_DIR to a writable folder")
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    security = settings.smtp_security
    client = aiosmtplib.SMTP(hostname=settings.smtp_host, port=settings.smtp_port,
                             use_tls=security is S.TLS, start_tls=False, timeout=TIMEOUT)
    try:
        await client.connect()
        code, _ = await client.ehlo()
        offered = client.supports_extension("starttls")
        if security is S.STARTTLS and not offered:
            return CheckLine("smtp", False, f"{where} does not offer STARTTLS "
                             "(SMTP_SECURITY=starttls requires it)",
                             "set SMTP_SECURITY to match the server")
        upgraded = security in (S.STARTTLS, S.AUTO) and offered
        if upgraded:
            await client.starttls()
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
                exc):
            return CheckLine("smtp", False, f"{where}: TLS certificate not trusted "
                             f"({short(exc)})", "install the relay's CA (SSL_CERT_FILE) or fix "
                             "its certificate; SMTP_SECURITY=none only for a loopback relay")
        return CheckLine("smtp", False, f"{where} unreachable: {short(exc)}",
                         "check SMTP_HOST/SMTP_PORT/SMTP_SECURITY (or MAILER=outbox)")
    how = {S.TLS: "over TLS", S.NONE: "in plaintext (SMTP_SECURITY=none)"}.get(
        security, "with STARTTLS, certificate verified" if upgraded else
        "in plaintext: the server offers no STARTTLS")
    detail = f"{where} answered EHLO ({code}); mail would go {how}; no mail sent"
    if security in (S.NONE, S.AUTO) and plaintext_risk(
            security, upgraded, await is_loopback(settings.smtp_host)):
        return CheckLine("smtp", False, detail + ": every new key would cross the network "
                         "readable", "enable STARTTLS on the relay and use SMTP_SECURITY=auto "
                         "or starttls (or tls on port 465)", blocking=False)
    return CheckLine("smtp", True, detail)
