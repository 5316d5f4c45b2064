"""One redactor for everything that leaves a step: output lines, error messages, summaries,
facts, plans, check reasons and the log lines the engine writes about them.

It knows the secrets by value (every secret setting, the passwords inside the bot's and the
target's URLs — raw and percent-encoded —, and the values of `DOWNGRADE_ENV`) and by shape:
any `scheme://user:password@` URL, and the shape of the keys step 4 generates (`KEY_FORMAT`:
a uuid4, or a 43-character URL-safe token). Short `DOWNGRADE_ENV` values (under 8 characters,
such as `true`) are masked only when their name says they are secret (KEY, SECRET, TOKEN,
PASS…): masking every `true` in a program's output would hide more than it protects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from pydantic import SecretStr

from bot.settings import KeyFormat, Settings

MASK = "***"
MIN_SECRET = 4
MIN_PLAIN_ENV_VALUE = 8
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASS|AUTH|CRED|PRIVATE", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)")
KEY_SHAPES: dict[KeyFormat, re.Pattern[str]] = {
    KeyFormat.UUID4: re.compile(
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
        r"[0-9a-fA-F]{12}\b"),
    KeyFormat.TOKEN: re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
}


def _url_password(url: str) -> str | None:
    match = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:(?P<password>[^\s@/]*)@", url)
    return match.group("password") if match and match.group("password") else None


class Redactor:
    def __init__(self, secrets: Iterable[str], key_shapes: Sequence[re.Pattern[str]] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET:
                values |= {secret, quote(secret, safe=""), quote(secret)}
        ordered = sorted(values, key=len, reverse=True)
        self._values = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None
        self._shapes = tuple(key_shapes)

    @classmethod
    def for_settings(cls, settings: Settings) -> Redactor:
        secrets: list[str] = []
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                if "://" in raw:  # a URL is secret for its password (masked wherever it goes)
                    password = _url_password(raw)
                    if password:  # as written in the URL, and as the database gets it
                        secrets += [password, unquote(password)]
                else:
                    secrets.append(raw)
        for name, value in settings.downgrade_env.items():
            if len(value) >= MIN_PLAIN_ENV_VALUE or SECRET_NAME.search(name):
                secrets.append(value)
        return cls(secrets, [KEY_SHAPES[settings.key_format]])

    def __call__(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(MASK, text)
        text = URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
        for shape in self._shapes:
            text = shape.sub(MASK, text)
        return text

    def value(self, value: Any) -> Any:
        """Strings anywhere inside facts (mappings, lists) redacted; other values kept."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {self(str(k)) if isinstance(k, str) else k: self.value(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
