"""The email a client receives: a text template whose first line is `Subject: ...`.

Placeholders are `{name}` and `{new_key}`, replaced literally (no `str.format`), so an operator's
template may hold other braces. A template without `{new_key}` is refused: that email would
tell the client its key changed without telling it the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as DEFAULT_POLICY
from email.utils import make_msgid
from pathlib import Path

from bot.domain.step_protocol import StepError
from bot.settings import Settings
from steps.directory import Contact

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "key_rotation_email.txt"


@dataclass(frozen=True)
class Template:
    subject: str
    body: str
    # Parsed headers, keyed by sender: parsing a header costs more than the rest of a message.
    _parsed: dict[str, tuple[tuple[str, object], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, settings: Settings) -> Template:
        path = settings.email_template or DEFAULT_TEMPLATE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StepError(f"cannot read the email template {path}: {exc.strerror}") from None
        first, _, body = text.partition("\n")
        if not first.lower().startswith("subject:") or not first.split(":", 1)[1].strip():
            raise StepError(f"email template {path} must start with a 'Subject: ...' line")
        if "{new_key}" not in body:
            raise StepError(f"email template {path} has no {{new_key}} placeholder")
        return cls(first.split(":", 1)[1].strip(), body.lstrip("\n"))

    def text(self, name: str, key: str) -> str:
        return self.body.replace("{name}", name).replace("{new_key}", key)

    def render(self, settings: Settings, contact: Contact, key: str, tag: str) -> EmailMessage:
        """`tag` (a hash prefix) names the message in headers and outbox file names."""
        message = EmailMessage()
        for name, value in self._headers(settings.mail_from):
            message.set_raw(name, value)
        message["To"] = contact.email  # parsed (and refused if malformed) per client
        # Ours, plain ASCII without line breaks: stored as is, parsed only if read back.
        message.set_raw("Message-ID", make_msgid(domain="rollback-bot"))
        message.set_raw("X-Rollback-Client", tag)
        message.set_content(self.text(contact.name, key))
        return message

    def _headers(self, mail_from: str) -> tuple[tuple[str, object], ...]:
        """Subject and From, parsed once: the same for every client."""
        if mail_from not in self._parsed:
            self._parsed[mail_from] = tuple(
                DEFAULT_POLICY.header_store_parse(name, value)
                for name, value in (("Subject", self.subject), ("From", mail_from)))
        return self._parsed[mail_from]


def masked(key_format: str) -> str:
    return "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" if key_format == "uuid4" else "x" * 43
