"""How an SMTP connection is opened: TLS to any relay not on this machine, or nothing.

A message holds a new API key and the login holds `SMTP_PASSWORD`: whoever sits between the
bot and a remote relay could hide the server's STARTTLS offer and read both. So, whatever
`SMTP_SECURITY` says short of `plaintext`, a relay that is not on this machine is spoken to
only over TLS (implicit, or STARTTLS with the certificate verified); without it the connection
is closed after EHLO, before any AUTH or MAIL, with an error naming the setting. Plaintext to
a relay elsewhere takes the explicit `SMTP_SECURITY=plaintext`, which `check` reports as a
problem and step 5's plan shows.

`open_smtp` is the one place that decides; the mailer, step 5's first move and `check` all
go through it, so what `check` says is what step 5 meets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass

import aiosmtplib

from bot.settings import Settings, SmtpSecurity

S = SmtpSecurity


class PlaintextRefused(Exception):
    """The relay would be spoken to without TLS although it is not on this machine."""


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


@dataclass(frozen=True)
class Connection:
    """An open, greeted SMTP connection, and how its bytes travel."""

    client: aiosmtplib.SMTP
    encrypted: bool
    ehlo_code: int

    @property
    def how(self) -> str:
        return "encrypted (TLS, certificate verified)" if self.encrypted else "in plaintext"


def plaintext_allowed(security: SmtpSecurity, loopback: bool) -> bool:
    """May bytes (login, keys) go unencrypted? Only to this machine, or when asked for."""
    return loopback or security is S.PLAINTEXT


def transport_line(settings: Settings, loopback: bool) -> str:
    """How step 5's mail would travel, for its plan (no connection made)."""
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    security = settings.smtp_security
    if security is S.TLS:
        return f"mail goes to {where} over implicit TLS, certificate verified"
    if security is S.PLAINTEXT and not loopback:
        return (f"mail goes to {where} IN PLAINTEXT (SMTP_SECURITY=plaintext): the SMTP "
                f"password and every new key cross the network readable")
    if security in (S.NONE, S.PLAINTEXT):
        return f"mail goes to {where} in plaintext, a relay on this machine"
    if security is S.STARTTLS or not loopback:
        return f"mail goes to {where} with STARTTLS required, certificate verified"
    return f"mail goes to {where} with STARTTLS when offered (a relay on this machine)"


async def open_smtp(settings: Settings, wait_seconds: float) -> Connection:
    """Connect, EHLO and upgrade as `SMTP_SECURITY` and the relay's place demand; not logged
    in. Raises PlaintextRefused (the connection closed, nothing sent past EHLO) when the relay
    would get plaintext it is not allowed, and aiosmtplib/OS errors as they come."""
    security = settings.smtp_security
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    client = aiosmtplib.SMTP(hostname=settings.smtp_host, port=settings.smtp_port,
                             use_tls=security is S.TLS, start_tls=False, timeout=wait_seconds)
    await client.connect()
    try:
        code, _ = await client.ehlo()
        if security is S.TLS:
            return Connection(client, True, code)
        offered = client.supports_extension("starttls")
        if security is S.STARTTLS and not offered:
            raise PlaintextRefused(f"{where} does not offer STARTTLS (SMTP_SECURITY=starttls "
                                   "requires it); nothing was sent")
        if security in (S.STARTTLS, S.AUTO) and offered:
            await client.starttls()
            return Connection(client, True, code)
        if not plaintext_allowed(security, await is_loopback(settings.smtp_host)):
            why = ("offers no STARTTLS" if security is S.AUTO
                   else f"would get plaintext (SMTP_SECURITY={security.value})")
            raise PlaintextRefused(
                f"{where} is not on this machine and {why}: refused before any login or "
                "message (the SMTP password and the keys would cross the network readable). "
                "Enable STARTTLS on the relay, or use SMTP_SECURITY=tls on its TLS port; "
                "SMTP_SECURITY=plaintext sends in the clear anyway")
        return Connection(client, False, code)
    except BaseException:
        with contextlib.suppress(Exception):
            client.close()
        raise


async def confirm_transport(settings: Settings, wait_seconds: float = 30) -> str:
    """Open and close a connection as a message would: the words for step 5's output, or
    PlaintextRefused / the connection's error before anything is mailed."""
    connection = await open_smtp(settings, wait_seconds)
    with contextlib.suppress(Exception):
        await connection.client.quit()
    return f"{settings.smtp_host}:{settings.smtp_port} answered, mail travels {connection.how}"
