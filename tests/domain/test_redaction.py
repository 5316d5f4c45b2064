"""The one redactor: secrets by value (settings, URL passwords, DOWNGRADE_ENV) and by shape."""

from __future__ import annotations

import pytest

from bot.domain.redaction import Redactor
from bot.settings import Settings

SETTINGS = Settings(  # type: ignore[call-arg]
    _env_file=None, slack_bot_token="xoxb-1-abcdef", smtp_password="p@ss w0rd!",
    target_database_url="postgresql://svc:tgt%2Fpw@db:5432/api",
    database_url="postgresql://bot:botpw123@db/bot",
    downgrade_env={"API_KEY": "k1-abc", "DEBUG": "true", "SIGNING": "longer-than-eight"},
)


@pytest.mark.parametrize(("line", "shown"), [
    ("token xoxb-1-abcdef here", "token *** here"),
    ("smtp p@ss w0rd! and p%40ss%20w0rd%21", "smtp *** and ***"),
    ("url postgresql+asyncpg://svc:tgt/pw@db:5432/api",
     "url postgresql+asyncpg://svc:***@db:5432/api"),
    ("encoded postgresql://svc:tgt%2Fpw@db/api", "encoded postgresql://svc:***@db/api"),
    ("any redis://:hunter22@cache:6379/0", "any redis://:***@cache:6379/0"),
    ("bot db botpw123", "bot db ***"),
    ("API_KEY=k1-abc DEBUG=true", "API_KEY=*** DEBUG=true"),
    ("SIGNING=longer-than-eight", "SIGNING=***"),
    ("new key 1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b!", "new key ***!"),
    ("revision 20260201_000006 and url http://localhost:54000/health",
     "revision 20260201_000006 and url http://localhost:54000/health"),
])
def test_what_is_masked_and_what_is_not(line: str, shown: str) -> None:
    assert Redactor.for_settings(SETTINGS)(line) == shown


def test_token_keys_and_facts() -> None:
    redact = Redactor.for_settings(SETTINGS.model_copy(update={"key_format": "token"}))
    token = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF"  # 43 URL-safe characters
    assert redact(f"key {token}.") == "key ***."
    facts = {"file": "/backups/x.dump", "nested": [{"url": "postgresql://a:secretpw@h/d"}],
             "count": 3}
    assert redact.value(facts) == {"file": "/backups/x.dump",
                                   "nested": [{"url": "postgresql://a:***@h/d"}], "count": 3}
