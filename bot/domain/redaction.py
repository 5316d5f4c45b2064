"""One redactor for everything that leaves a step: output lines, error messages, summaries, facts,
plans, check reasons and the log lines the engine writes about them.

It knows the secrets by value (every secret setting, the passwords inside the bot's and the
target's URLs — in the user info or the query's `password` / `sslpassword` —, and the values of
`DOWNGRADE_ENV`, and every value of `RESTART_ENV`, `CODE_RESTORE_ENV`, `KEY_INSTALL_ENV`), each
in every spelling a library makes of it (as is, percent-encoded in full, keeping `/`, or as
SQLAlchemy renders a user info: `p%40ss word`; form-encoded with `+` for a space), and by
shape: any `scheme://user:password@` URL, any `password=` / `sslpassword=` query parameter, a
secret written into a command line (`--token=…`, `--password …`, `API_TOKEN=…`, `Bearer …`: how
a command setting leaks in plans and facts), and the shape of the keys step 4 generates
(`KEY_FORMAT`: a uuid4, or a 43-character URL-safe token). Short `DOWNGRADE_ENV` values (under
8 characters, such as `true`) are masked only when their name says they are secret (KEY,
SECRET, TOKEN, PASS…): masking every `true` in a program's output would hide more than it
protects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus

from pydantic import SecretStr

from bot.settings import KeyFormat, Settings

MASK = "***"
MIN_SECRET = 4
MIN_PLAIN_ENV_VALUE = 8
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASS|AUTH|CRED|PRIVATE", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)")
QUERY_PASSWORD = re.compile(r"(?P<head>[?&;](?:ssl)?password=)[^&\s#]+", re.IGNORECASE)
USER_INFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^:/]*:(?P<password>[^@]*)@")
# A secret written into a command line: `--token=…`/`--password …`, `API_TOKEN=…`, a bearer.
SECRET_OPTION = re.compile(
    r"(?P<head>--?[A-Za-z0-9-]*(?:token|secret|passw(?:or)?d|pass|auth|cred|private|api-?key)"
    r"[A-Za-z0-9-]*(?:=|\s+))(?!\*\*\*)[^\s'\"]+", re.IGNORECASE)
SECRET_ASSIGNMENT = re.compile(
    r"(?P<head>\b[A-Z][A-Z0-9_]*(?:KEY|SECRET|TOKEN|PASS|PASSWORD|AUTH|CRED|CREDENTIALS)=)"
    r"(?!\*\*\*)[^\s'\"]+")
BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic|token)\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}")
KEY_SHAPES: dict[KeyFormat, re.Pattern[str]] = {
    KeyFormat.UUID4: re.compile(
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
        r"[0-9a-fA-F]{12}\b"),
    KeyFormat.TOKEN: re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
}


def spellings(secret: str) -> set[str]:
    """The secret as libraries write it: as is, percent-encoded (everything; keeping `/`; as
    SQLAlchemy's user info, keeping ` +`), and form-encoded (a space as `+`)."""
    forms = {secret}
    for safe in ("", "/", " +", "+"):
        forms.add(quote(secret, safe=safe))
    for safe in ("", "/"):
        forms.add(quote_plus(secret, safe=safe))
    return forms


def url_passwords(url: str) -> list[str]:
    """Every password a URL holds, as written and as decoded: the user info's and the query's
    `password` / `sslpassword`."""
    found: list[str] = []
    head, _, query = url.partition("?")
    match = USER_INFO.match(head)
    if match and match.group("password"):
        found += [match.group("password"), unquote(match.group("password"))]
    for raw in query.split("#", 1)[0].replace(";", "&").split("&"):
        name, _, value = raw.partition("=")
        if name.lower() in ("password", "sslpassword") and value:
            found += [value, unquote(value), unquote_plus(value)]
    found += [v for k, v in parse_qsl(query) if k.lower() in ("password", "sslpassword") and v]
    return found


class Redactor:
    def __init__(self, secrets: Iterable[str], key_shapes: Sequence[re.Pattern[str]] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET:
                values |= spellings(secret)
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
                if "://" in raw:  # a URL is secret for its passwords (masked wherever they go)
                    secrets += url_passwords(raw)
                else:
                    secrets.append(raw)
        secrets += [v.get_secret_value() for v in settings.break_glass_totp_secrets.values()]
        for env in (settings.restart_env, settings.code_restore_env, settings.key_install_env):
            secrets += env.values()  # secret environment by definition: every value masked
        for name, value in settings.downgrade_env.items():
            if len(value) >= MIN_PLAIN_ENV_VALUE or SECRET_NAME.search(name):
                secrets.append(value)
        return cls(secrets, [KEY_SHAPES[settings.key_format]])

    def __call__(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(MASK, text)
        text = URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
        text = QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
        for shape in (SECRET_OPTION, SECRET_ASSIGNMENT, BEARER):
            text = shape.sub(lambda m: m.group("head") + MASK, text)
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
