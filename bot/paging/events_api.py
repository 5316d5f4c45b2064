"""PagerDuty's Events API v2 on the wire: `POST {base}/v2/enqueue`, answered 202 with the alert's
`dedup_key`.

Documented answers: 202 accepted; 400 the event is invalid (never retried: sending it again
cannot help); 429 too many events and 5xx PagerDuty's own trouble (retried with a growing
back-off, as are network errors). After the last attempt the failure is returned, never raised:
the caller records it and the rollback goes on. The routing key travels only in the request body;
it is never logged or returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.domain.paging_policy import PageAction, PageRequest, PageResult
from bot.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 60.0
Sleep = Callable[[float], Awaitable[None]]


class PagerDutyEvents:
    def __init__(
        self, routing_key: str, base_url: str, *, source: str = "rollback-bot",
        max_attempts: int = 4, backoff_seconds: float = 2.0, timeout_seconds: float = 10.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._routing_key = routing_key
        self.url = base_url.rstrip("/") + "/v2/enqueue"
        self.source = source
        self.max_attempts = max(1, max_attempts)
        self.backoff_seconds = backoff_seconds
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never the routing key
        return f"PagerDutyEvents({self.url!r})"

    def body(self, request: PageRequest) -> dict[str, Any]:
        """The event as PagerDuty documents it; acknowledge and resolve carry only the key."""
        body: dict[str, Any] = {
            "routing_key": self._routing_key,
            "event_action": request.action.value,
            "dedup_key": request.dedup_key,
        }
        if request.action is PageAction.TRIGGER:
            body["payload"] = {
                "summary": request.summary,
                "source": self.source,
                "severity": request.severity.value,
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "component": "phase3-rollback",
                "group": "rollback-bot",
                "class": request.trigger.value,
                "custom_details": dict(request.custom_details),
            }
            body["client"] = "rollback-bot"
            if request.link:
                body["client_url"] = request.link
                body["links"] = [{"href": request.link, "text": "Incident thread in Slack"}]
        return body

    async def send(self, request: PageRequest) -> PageResult:
        body = self.body(request)
        status: int | None = None
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                session = self._open()
                async with session.post(self.url, json=body, timeout=self.timeout) as answer:
                    status = answer.status
                    payload = await _json(answer)
                    if status in (200, 201, 202):
                        return PageResult(True, attempt, status,
                                          str(payload.get("dedup_key") or request.dedup_key))
                    error = _error_text(status, payload)
                    if status != 429 and status < 500:
                        return PageResult(False, attempt, status, None, error)
                    retry_after = _retry_after(answer.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, error = None, f"PagerDuty unreachable: {type(exc).__name__}: {exc}"[:300]
            if attempt < self.max_attempts:
                delay = retry_after if retry_after is not None \
                    else self.backoff_seconds * 2 ** (attempt - 1)
                log.warning("page %s %s not taken (%s); retrying in %.1f s",
                            request.action.value, request.dedup_key, error, delay)
                await self._sleep(delay)
        return PageResult(False, self.max_attempts, status, None, error)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _json(answer: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        payload = await answer.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _error_text(status: int, payload: dict[str, Any]) -> str:
    errors = payload.get("errors")
    detail = "; ".join(str(e) for e in errors) if isinstance(errors, list) else ""
    message = str(payload.get("message") or payload.get("status") or "")
    return f"HTTP {status}" + (f" {message}" if message else "") + (f": {detail}" if detail else "")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        return None


def pager_from_settings(settings: Settings) -> PagerDutyEvents | None:
    """The pager the settings describe; None (paging off) without a routing key."""
    key = settings.pagerduty_routing_key
    if key is None or not key.get_secret_value().strip():
        return None
    return PagerDutyEvents(
        key.get_secret_value().strip(), settings.pagerduty_events_url,
        source=settings.pagerduty_source, max_attempts=settings.page_max_attempts,
        backoff_seconds=settings.page_retry_seconds,
    )
