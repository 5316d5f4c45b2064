"""Every setting the bot reads, from the environment and an optional `.env`.

The environment names are a contract: other tooling drives the bot with them, and the README and
`.env.example` list each one with its default. Commands ask for the settings they need with
`require()`, so a missing one stops the program with a single message naming all of them.
"""

from __future__ import annotations

import base64
import binascii
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PHASE2_REVISION = "20260201_000006"
PHASE3_REVISIONS = ("20260208_000007", "0c6d1a600bb1", "9ddfdd63af30")


class MailerKind(StrEnum):
    SMTP = "smtp"
    OUTBOX = "outbox"


class SmtpSecurity(StrEnum):
    """Whatever the value short of `plaintext`, a relay not on this machine gets TLS or no
    connection (steps/mailers/transport.py)."""

    AUTO = "auto"  # STARTTLS when offered; required unless the relay is on this machine
    STARTTLS = "starttls"  # STARTTLS required
    TLS = "tls"  # implicit TLS from the first byte (port 465)
    NONE = "none"  # plaintext to a relay on this machine only
    PLAINTEXT = "plaintext"  # plaintext to any relay, explicitly (check reports a problem)


class KeyFormat(StrEnum):
    UUID4 = "uuid4"
    TOKEN = "token"


class RestartStrategy(StrEnum):
    DOCKER = "docker"
    COMMAND = "command"


class KeyModel(StrEnum):
    """`per_client`: the runbook's model, a key per client. `service`: the real service's, one
    door key (`API_KEY`) every request must carry before rows are filtered by its hash."""

    PER_CLIENT = "per_client"
    SERVICE = "service"


class KeyInstaller(StrEnum):
    ENV_FILE = "env-file"
    COMMAND = "command"


CommaList = Annotated[tuple[str, ...], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    rollback_channel: str = "oncall-engineering"
    approver_user_ids: CommaList = ()
    approver_usergroup_id: str | None = None
    allow_self_approval: bool = False
    slack_write_interval_seconds: float = Field(default=1.0, ge=0)
    slack_reply_concurrency: int = Field(default=4, ge=1)
    # SIGTERM: how long acked work may still run before the rest is handed over (bot/serve.py)
    shutdown_seconds: float = Field(default=6.0, gt=0)
    # Break-glass (`rehearse --real`, `escalate`, `follow-ups`): Slack user id -> base32 TOTP
    # secret; each engineer at a terminal proves who they are with their own current code.
    break_glass_totp_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict)

    # The bot's own state
    database_url: SecretStr | None = None
    log_level: str = "INFO"
    # Several targets, each with its settings under its own prefix (bot/targets.py); empty:
    # the settings here are the one target `default`.
    targets: CommaList = ()
    # The target whose last run counts as this one's rehearsal (its plan quotes it and warns);
    # with TARGETS naming `staging`, every other target's defaults to it.
    rehearsal_target: str = ""

    # The service being rolled back
    target_database_url: SecretStr = SecretStr(
        "postgresql://postgres@localhost:54432/claude_agent_api"
    )
    phase2_revision: str = PHASE2_REVISION
    phase3_revisions: CommaList = PHASE3_REVISIONS
    step_timeout_seconds: float = Field(default=1800.0, gt=0)
    step_lease_seconds: float = Field(default=15.0, gt=0)
    plan_timeout_seconds: float = Field(default=5.0, gt=0)
    target_lock_timeout_seconds: float = Field(default=5.0, ge=0)
    target_statement_timeout_seconds: float = Field(default=900.0, ge=0)

    # Step 1: backup
    backup_dir: Path = Path("backups")
    pg_dump_path: str = "pg_dump"
    pg_restore_path: str = "pg_restore"

    # Step 2: downgrade
    downgrade_command: str = f"alembic downgrade {PHASE2_REVISION}"
    downgrade_workdir: Path = Path(".")
    downgrade_env: dict[str, str] = Field(default_factory=dict)
    downgrade_database_url_scheme: str = "postgresql+asyncpg"

    # Step 3: restore Phase 2 code and restart
    code_restore_command: str = ""
    code_restore_workdir: Path = Path(".")
    restart_strategy: RestartStrategy = RestartStrategy.DOCKER
    restart_command: str = ""
    # Secret environment for each configured command (JSON objects, redacted everywhere): a
    # token a command needs goes here, never into its arguments.
    restart_env: dict[str, str] = Field(default_factory=dict)
    code_restore_env: dict[str, str] = Field(default_factory=dict)
    api_compose_project: str = ""
    api_compose_service: str = "api"
    api_container_name: str = ""
    api_health_path: str = "/health"
    health_timeout_seconds: float = Field(default=120.0, gt=0)

    # Step 4: new keys
    key_format: KeyFormat = KeyFormat.UUID4
    rotation_target_txn_seconds: float = Field(default=0.5, gt=0, le=30)
    rotation_batch_pages: int = Field(default=200, gt=0)
    rotation_max_batch_pages: int = Field(default=20_000, gt=0)
    rotation_workers: int = Field(default=3, gt=0)

    # Step 4 with KEY_MODEL=service: the new door key installed where the service reads it
    key_model: KeyModel = KeyModel.PER_CLIENT
    service_key_old_hash: str = ""
    key_installer: KeyInstaller = KeyInstaller.ENV_FILE
    service_env_file: Path | None = None
    service_env_variable: str = "API_KEY"
    key_install_command: str = ""
    key_install_env: dict[str, str] = Field(default_factory=dict)

    # Step 4: the service's Redis caches, emptied of entries holding old hashes
    redis_url: SecretStr | None = None
    cache_session_pattern: str = "session:*"
    cache_owner_key: str = "session:owner:{hash}"
    cache_hash_field: str = "owner_api_key_hash"
    cache_batch: int = Field(default=500, gt=0)

    # Step 5: email
    mailer: MailerKind = MailerKind.SMTP
    client_directory: Path | None = None
    client_directory_query: str = ""
    email_template: Path | None = None
    mail_from: str = "noreply@localhost"
    outbox_dir: Path = Path("outbox")
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_security: SmtpSecurity = SmtpSecurity.AUTO
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    email_concurrency: int = Field(default=16, gt=0)
    email_max_attempts: int = Field(default=4, gt=0)

    # Step 6: verify
    api_base_url: str = "http://localhost:54000"
    verify_sample_size: int = Field(default=5, gt=0)
    verify_log_patterns: CommaList = ("ownership_check_failed",)

    # Paging and follow-through (bot/paging, bot/engine/follow_through.py)
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com"
    pagerduty_source: str = "rollback-bot"
    page_on: CommaList = ("start", "failure", "waiting", "quorum")
    page_max_attempts: int = Field(default=4, gt=0)
    page_retry_seconds: float = Field(default=2.0, ge=0)
    escalation_usergroup_id: str | None = None
    approval_reminder_minutes: float = Field(default=15.0, ge=0)  # 0: no reminders
    approval_page_minutes: float = Field(default=30.0, ge=0)  # 0: no page for waiting
    approval_ttl_minutes: float = Field(default=60.0, gt=0)
    follow_through_interval_seconds: float = Field(default=15.0, gt=0)

    # Which target these settings are for (bot/targets.py sets it; never read from the env).
    _target_name: str = PrivateAttr(default="default")

    _split = field_validator(
        "targets", "approver_user_ids", "phase3_revisions", "verify_log_patterns", "page_on",
        mode="before",
    )(_split_commas)

    @field_validator("page_on")
    @classmethod
    def _known_triggers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = ("start", "failure", "waiting", "quorum")
        unknown = [v for v in value if v.lower() not in known]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}; choose among {', '.join(known)}")
        return tuple(v.lower() for v in value)

    @field_validator(
        "slack_bot_token", "slack_signing_secret", "slack_app_token", "approver_usergroup_id",
        "database_url", "client_directory", "email_template", "smtp_password", "redis_url",
        "service_env_file", "pagerduty_routing_key", "escalation_usergroup_id", mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("break_glass_totp_secrets", mode="before")
    @classmethod
    def _user_secrets(cls, value: Any) -> Any:
        """`U1=BASE32,U2=BASE32` or a JSON object; each secret must be base32."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                value = json.loads(text)
            else:
                pairs = [part.partition("=") for part in text.split(",") if part.strip()]
                if any(not sep for _, sep, _ in pairs):
                    raise ValueError("expected USER_ID=BASE32_SECRET, comma-separated")
                value = {k.strip(): v.strip() for k, _, v in pairs}
        if isinstance(value, dict):
            for user, secret in value.items():
                raw = secret.get_secret_value() if isinstance(secret, SecretStr) else str(secret)
                cleaned = raw.replace(" ", "").upper()
                try:
                    base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
                except (binascii.Error, ValueError):
                    raise ValueError(f"the secret of {user} is not base32") from None
        return value

    @field_validator("downgrade_env", "restart_env", "code_restore_env", "key_install_env",
                     mode="before")
    @classmethod
    def _json_env(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @property
    def target_name(self) -> str:
        return self._target_name

    def for_target(self, name: str) -> Settings:
        """A copy of these settings naming the target they are for."""
        copy = self.model_copy()
        copy._target_name = name
        return copy

    def require(self, *names: str) -> None:
        """Stop with one message naming every setting in `names` that is not set."""
        missing = [name.upper() for name in names if getattr(self, name.lower()) in (None, "")]
        if missing:
            raise SettingsError(
                "missing required setting" + ("s" if len(missing) > 1 else "") + ": "
                + ", ".join(missing)
                + " (set them in the environment or in .env; see README.md)"
            )


class SettingsError(Exception):
    """A configuration problem worth one clear line to the operator, not a traceback."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
