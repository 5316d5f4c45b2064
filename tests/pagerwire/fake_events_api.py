"""A local PagerDuty Events API v2 (`POST /v2/enqueue`), as strict as its documentation.

It refuses with 400 ("invalid event") what PagerDuty documents as invalid: a routing key that is
not 32 characters, an unknown event_action, a trigger without payload.summary/source/severity,
a severity outside critical/error/warning/info, a summary over 1024 characters, a dedup_key over
255, an acknowledge or resolve without a dedup_key, a link without href, a body over 512 KB.
Accepted events are answered 202 with their dedup_key and applied to alerts as PagerDuty does
(a trigger opens or adds to the open alert of its key; acknowledge and resolve apply to an open
alert and are dropped otherwise). Faults (429, 5xx) can be programmed; every request is
recorded, accepted or not.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.slackwire.serve import serve_on_free_port

SEVERITIES = ("critical", "error", "warning", "info")
ACTIONS = ("trigger", "acknowledge", "resolve")
TOP_LEVEL = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client",
             "client_url"}
PAYLOAD_FIELDS = {"summary", "source", "severity", "timestamp", "component", "group", "class",
                  "custom_details"}
SIZE_LIMIT = 512 * 1024


@dataclass
class Request:
    status: int
    body: Any
    errors: list[str]
    at: float


@dataclass
class Alert:
    dedup_key: str
    routing_key: str
    status: str  # triggered | acknowledged | resolved
    severity: str
    summary: str
    triggers: int = 1


@dataclass
class Fault:
    status: int
    times: int
    retry_after: int | None = None


@dataclass
class FakeEventsApi:
    requests: list[Request] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # accepted, in order
    alerts: list[Alert] = field(default_factory=list)  # every alert ever opened
    fault: Fault | None = None
    url: str = ""

    def fail_next(self, status: int = 500, times: int = 1, retry_after: int | None = None) -> None:
        self.fault = Fault(status, times, retry_after)

    def outage(self, status: int = 503) -> None:
        """Every request fails until `recover()`."""
        self.fault = Fault(status, 10**9)

    def recover(self) -> None:
        self.fault = None

    def open_alert(self, dedup_key: str) -> Alert | None:
        return next((a for a in reversed(self.alerts)
                     if a.dedup_key == dedup_key and a.status != "resolved"), None)

    def alerts_for(self, dedup_key: str) -> list[Alert]:
        return [a for a in self.alerts if a.dedup_key == dedup_key]

    def events_with(self, action: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_action"] == action]

    async def wait_for(self, predicate: Callable[[], Any], within: float = 30.0) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not met within {within} s")

    # --- the server -------------------------------------------------------------------------

    async def enqueue(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.fault is not None and self.fault.times > 0:
            self.fault.times -= 1
            self.requests.append(Request(self.fault.status, raw.decode(errors="replace"),
                                         ["fault injected"], time.monotonic()))
            headers = {"Retry-After": str(self.fault.retry_after)} \
                if self.fault.retry_after is not None else {}
            return web.json_response({"status": "error", "message": "injected fault"},
                                     status=self.fault.status, headers=headers)
        errors: list[str] = []
        body: Any = None
        if len(raw) > SIZE_LIMIT:
            errors.append("Event object is larger than 512 KB")
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                errors.append("Request body is not valid JSON")
        if body is not None:
            errors += validate(body)
        if errors:
            self.requests.append(Request(400, body, errors, time.monotonic()))
            return web.json_response({"status": "invalid event",
                                      "message": "Event object is invalid", "errors": errors},
                                     status=400)
        assert isinstance(body, dict)
        dedup_key = body.get("dedup_key") or uuid.uuid4().hex
        body = {**body, "dedup_key": dedup_key}
        self.requests.append(Request(202, body, [], time.monotonic()))
        self.events.append(body)
        self._apply(body)
        return web.json_response({"status": "success", "message": "Event processed",
                                  "dedup_key": dedup_key}, status=202)

    def _apply(self, event: dict[str, Any]) -> None:
        key, action = event["dedup_key"], event["event_action"]
        alert = self.open_alert(key)
        if alert is not None and alert.routing_key != event["routing_key"]:
            return  # follow-ups through another routing key are dropped
        if action == "trigger":
            payload = event["payload"]
            if alert is None:
                self.alerts.append(Alert(key, event["routing_key"], "triggered",
                                         payload["severity"], payload["summary"]))
            else:
                alert.triggers += 1
                alert.severity, alert.summary = payload["severity"], payload["summary"]
        elif alert is not None:
            alert.status = "acknowledged" if action == "acknowledge" else "resolved"


def validate(body: Any) -> list[str]:
    """PagerDuty's documented rules for an alert event; each problem as one message."""
    if not isinstance(body, dict):
        return ["Event object must be a JSON object"]
    errors = [f"Unknown field '{name}'" for name in sorted(set(body) - TOP_LEVEL)]
    routing_key = body.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key:
        errors.append("'routing_key' is missing or blank")
    elif len(routing_key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = body.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    dedup_key = body.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append(f"'dedup_key' is required for {action} events")
    if action == "trigger":
        errors += _validate_payload(body.get("payload"))
    for name in ("client", "client_url"):
        if name in body and not isinstance(body[name], str):
            errors.append(f"'{name}' must be a string")
    links = body.get("links", [])
    if not isinstance(links, list) or any(
            not isinstance(link, dict) or not isinstance(link.get("href"), str)
            or not link["href"] or not isinstance(link.get("text", ""), str) for link in links):
        errors.append("'links' must be a list of objects, each with an 'href'")
    images = body.get("images", [])
    if not isinstance(images, list) or any(
            not isinstance(image, dict) or not str(image.get("src", "")).startswith("https://")
            for image in images):
        errors.append("'images' must be a list of objects, each with an https 'src'")
    return errors


def _validate_payload(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is required for trigger events"]
    errors = [f"Unknown field 'payload.{name}'" for name in sorted(set(payload) - PAYLOAD_FIELDS)]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        errors.append("'payload.summary' is longer than 1024 characters")
    source = payload.get("source")
    if not isinstance(source, str) or not source.strip():
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in SEVERITIES:
        errors.append("'payload.severity' is invalid (must be one of critical, error, warning, "
                      "info)")
    timestamp = payload.get("timestamp")
    if timestamp is not None:
        try:
            datetime.fromisoformat(str(timestamp))
        except ValueError:
            errors.append("'payload.timestamp' is not an ISO 8601 timestamp")
    for name in ("component", "group", "class"):
        if name in payload and not isinstance(payload[name], str):
            errors.append(f"'payload.{name}' must be a string")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    return errors


async def start_fake_events_api() -> tuple[FakeEventsApi, web.AppRunner]:
    fake = FakeEventsApi()
    app = web.Application(client_max_size=4 * SIZE_LIMIT)
    app.router.add_post("/v2/enqueue", fake.enqueue)
    runner, port = await serve_on_free_port(app)
    fake.url = f"http://127.0.0.1:{port}"
    return fake, runner
