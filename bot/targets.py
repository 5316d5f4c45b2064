"""The targets one bot serves: named in `TARGETS`, each target's settings under its own prefix.

`TARGETS=staging,production` with `STAGING__TARGET_DATABASE_URL=…` and
`PRODUCTION__TARGET_DATABASE_URL=…`: every setting about the service being rolled back (its
database, the steps' commands, its api, its mail, its approvers) may be given per target, and
what a target does not set it takes from the plain setting, so shared timeouts are written once.
What there is one of per bot (the Slack app, the bot's own database, the log level) is refused
under a prefix: a second Slack token there would be a silent lie. Without `TARGETS` the
settings of today are one target named `default`, unchanged.

A target whose settings are incomplete or invalid is refused with what is missing, and only it:
the others keep working (`check` and `serve` say which and why).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import ValidationError

from bot.settings import Settings, SettingsError

DEFAULT_TARGET = "default"
SEPARATOR = "__"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# One of each per bot: refused under a target's prefix.
BOT_WIDE = frozenset({
    "targets", "slack_bot_token", "slack_signing_secret", "slack_app_token", "slack_api_url",
    "rollback_channel", "slack_write_interval_seconds", "slack_reply_concurrency",
    "database_url", "log_level",
})
# A named target must say where it is: a default here would point two targets at one service.
REQUIRED_PER_TARGET = ("target_database_url", "api_base_url")
# Where the others are rehearsed when nobody said (REHEARSAL_TARGET): the runbook's staging.
REHEARSAL_DEFAULT = "staging"


class UnknownTarget(SettingsError):
    """A target nobody configured; the message names the known ones."""


class TargetRefused(SettingsError):
    """A configured target whose settings are incomplete or invalid; the message says what."""


@dataclass(frozen=True)
class Targets:
    """Every configured target: those usable (`settings`) and those refused (`refused`, why)."""

    names: tuple[str, ...]
    settings: Mapping[str, Settings] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def several(self) -> bool:
        return len(self.names) > 1

    def get(self, name: str | None) -> Settings:
        """The settings of target `name` (None: the only one); a clear error otherwise."""
        if name is None:
            if self.several:
                raise UnknownTarget(f"several targets are configured; name one of "
                                    f"{', '.join(self.names)}")
            name = self.names[0]
        key = name.strip().lower()
        if key in self.refused:
            raise TargetRefused(f"target {key} is refused: {self.refused[key]}")
        if key not in self.settings:
            raise UnknownTarget(f"unknown target {name!r}; known targets: "
                                f"{', '.join(self.names)}")
        return self.settings[key]


    @property
    def usable(self) -> tuple[Settings, ...]:
        """The targets that can be served, in the order TARGETS names them."""
        return tuple(self.settings[name] for name in self.names if name in self.settings)

    def serving(self, log: logging.Logger) -> tuple[Settings, ...]:
        """Every target `serve` serves, one engine each: each refused one is logged with what
        is missing, and the others keep working."""
        for name, why in self.refused.items():
            log.error("target %s is refused and not served: %s", name, why)
        if not self.usable:
            raise TargetRefused("no target can be served: " + "; ".join(
                f"{name}: {why}" for name, why in self.refused.items()))
        return self.usable

    def refusal(self, name: str) -> str | None:
        """Why `name` cannot be used (unknown, or refused and why), or None when it can."""
        try:
            self.get(name)
        except SettingsError as exc:
            return str(exc)
        return None


def _prefixed(environ: Mapping[str, str], target: str) -> dict[str, str]:
    """`STAGING__SMTP_HOST=…` → {"smtp_host": "…"} for target `staging` (any case)."""
    head = (target + SEPARATOR).lower()
    return {key[len(head):].lower(): value for key, value in environ.items()
            if key.lower().startswith(head)}


def target_settings(base: Settings, target: str, environ: Mapping[str, str]) -> Settings:
    """The settings of one named target: `base` overridden by its prefixed values, validated
    as the plain ones are. TargetRefused says everything wrong with it at once."""
    given = _prefixed(environ, target)
    prefix = target.upper() + SEPARATOR
    problems = [f"{prefix}{name.upper()} is bot-wide: set {name.upper()} once, without a "
                "prefix" for name in sorted(given) if name in BOT_WIDE]
    problems += [f"{prefix}{name.upper()} is not a setting" for name in sorted(given)
                 if name not in Settings.model_fields]
    missing = [prefix + name.upper() for name in REQUIRED_PER_TARGET if not given.get(name)]
    if missing:
        problems.append("missing " + ", ".join(missing))
    if problems:
        raise TargetRefused("; ".join(problems))
    values: dict[str, Any] = {name: getattr(base, name) for name in Settings.model_fields}
    values.update(given)
    try:
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise TargetRefused("; ".join(
            f"{prefix}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors())) from None
    return settings.for_target(target)


def _refuse_shared_database(settings: Settings, earlier: Mapping[str, Settings]) -> None:
    """Two targets on one database would roll one service back twice, under two names."""
    url = settings.target_database_url.get_secret_value()
    for name, other in earlier.items():
        if other.target_database_url.get_secret_value() == url:
            raise TargetRefused(f"{settings.target_name.upper()}{SEPARATOR}TARGET_DATABASE_URL "
                                f"is {name}'s database too: each target is its own service")


def load_targets(base: Settings, environ: Mapping[str, str] | None = None,
                 env_file: Path | None = Path(".env")) -> Targets:
    """The configured targets. `environ` beats `env_file`, as for the plain settings."""
    if not base.targets:
        return Targets((DEFAULT_TARGET,), {DEFAULT_TARGET: base.for_target(DEFAULT_TARGET)})
    names = tuple(name.lower() for name in base.targets)
    bad = [name for name in names if not NAME.match(name)]
    if bad:
        raise SettingsError(f"TARGETS: {', '.join(bad)} is not a target name (lower-case "
                            "letters, digits and _, starting with a letter)")
    if len(set(names)) != len(names):
        raise SettingsError(f"TARGETS names a target twice: {', '.join(base.targets)}")
    source: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        source.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    source.update(os.environ if environ is None else environ)
    usable: dict[str, Settings] = {}
    refused: dict[str, str] = {}
    for name in names:
        try:
            settings = target_settings(base, name, source)
            _refuse_shared_database(settings, usable)
            if not settings.rehearsal_target and REHEARSAL_DEFAULT in names \
                    and name != REHEARSAL_DEFAULT:
                settings = settings.model_copy(update={"rehearsal_target": REHEARSAL_DEFAULT})
            usable[name] = settings
        except TargetRefused as exc:
            refused[name] = str(exc)
    return Targets(names, usable, refused)
