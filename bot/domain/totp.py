"""Time-based one-time passwords (RFC 6238, HMAC-SHA1, 6 digits, 30 s steps) with the
standard library only: how an engineer at a terminal proves which approver they are.

`matching_step` answers which time step a typed code belongs to (the current one or one either
side, for a clock a little off), so the caller can refuse a step already used by that approver
(a replayed code). Secrets are base32, as authenticator apps show them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1  # a code of the step before or after is accepted too


class BadSecret(ValueError):
    """The configured secret is not base32."""


def decode_secret(secret: str) -> bytes:
    cleaned = secret.replace(" ", "").upper()
    try:
        return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError):
        raise BadSecret("not a base32 secret") from None


def time_step(unix_seconds: float) -> int:
    return int(unix_seconds // STEP_SECONDS)


def code_at(key: bytes, step: int, digits: int = DIGITS) -> str:
    """RFC 4226 HOTP of `step` (RFC 6238 feeds it the time step)."""
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10 ** digits).zfill(digits)


def matching_step(secret: str, code: str, unix_seconds: float) -> int | None:
    """The time step whose code `code` is (now, or one step either side), else None."""
    typed = code.strip().replace(" ", "")
    if len(typed) != DIGITS or not typed.isdigit():
        return None
    key = decode_secret(secret)
    now = time_step(unix_seconds)
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at(key, step), typed):
            return step
    return None
