"""RFC 6238's own test vectors (SHA-1, its appendix B) and the drift window."""

from __future__ import annotations

import base64

import pytest

from bot.domain.totp import BadSecret, code_at, decode_secret, matching_step, time_step

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(("unix", "code"), [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])
def test_rfc_6238_vectors(unix: int, code: str) -> None:
    assert code_at(decode_secret(RFC_SECRET), time_step(unix), digits=8) == code


def test_a_code_matches_its_step_and_one_either_side_only() -> None:
    key = decode_secret(RFC_SECRET)
    now = 1_800_000_000
    step = time_step(now)
    assert matching_step(RFC_SECRET, code_at(key, step), now) == step
    assert matching_step(RFC_SECRET, code_at(key, step - 1), now) == step - 1
    assert matching_step(RFC_SECRET, code_at(key, step + 1), now) == step + 1
    assert matching_step(RFC_SECRET, code_at(key, step - 2), now) is None
    assert matching_step(RFC_SECRET, "12345", now) is None
    assert matching_step(RFC_SECRET, "abcdef", now) is None


def test_a_secret_that_is_not_base32_is_named() -> None:
    with pytest.raises(BadSecret):
        decode_secret("not base32!")
