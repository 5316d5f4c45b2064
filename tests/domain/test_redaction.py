"""The one redactor: secrets by value (settings, URL passwords, DOWNGRADE_ENV) and by shape."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

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


PASSWORDS = ["p ss word", "p@ss", "us:er:pw", "100%sure", "hash#tag", "a/b/c", "pässwörd-ключ",
             "all of @:%#/ é+"]


def spellings_a_library_makes(password: str) -> dict[str, str]:
    """How the password appears once a URL holding it is rendered by each library we use."""
    from urllib.parse import quote, quote_plus

    from sqlalchemy.engine import make_url

    in_user_info = make_url(f"postgresql://svc:{quote(password, safe='')}@db/api").set(
        drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    in_query = make_url(f"postgresql://svc@db/api?password={quote(password, safe='')}"
                        ).render_as_string(hide_password=False)
    return {
        "raw": password,
        "percent-encoded": quote(password, safe=""),
        "percent-encoded, / kept": quote(password),
        "form-encoded": quote_plus(password),
        "SQLAlchemy user info": in_user_info.split("svc:", 1)[1].rsplit("@db", 1)[0],
        "SQLAlchemy query": in_query.split("password=", 1)[1],
    }


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("where", ["user info", "query", "sslpassword"])
def test_every_spelling_of_a_database_password_is_masked(password: str, where: str) -> None:
    from urllib.parse import quote

    from bot.urls import redacted

    encoded = quote(password, safe="")
    url = {"user info": f"postgresql://svc:{encoded}@db:5432/api?sslmode=require",
           "query": f"postgresql://svc@db:5432/api?sslmode=require&password={encoded}",
           "sslpassword": f"postgresql://svc@db:5432/api?sslpassword={encoded}"}[where]
    redact = Redactor.for_settings(SETTINGS.model_copy(update={
        "target_database_url": SecretStr(url)}))
    for form, text in spellings_a_library_makes(password).items():
        shown = redact(f"DATABASE_URL={text} printed by the downgrade")
        assert password not in shown and text not in shown, f"{form}: {shown}"
        assert "printed by the downgrade" in shown
    for shown in (redacted(url), redact(url)):
        assert "db:5432/api" in shown
        for text in spellings_a_library_makes(password).values():
            assert text not in shown, shown


def test_an_unknown_url_with_a_query_password_is_masked_by_shape() -> None:
    redact = Redactor.for_settings(SETTINGS)
    assert redact("dsn postgresql://h/d?sslmode=require&password=zz9-plural&x=1") == (
        "dsn postgresql://h/d?sslmode=require&password=***&x=1")
