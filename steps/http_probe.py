"""GET requests against the api being rolled back, answered as plain values.

A probe never raises for a network problem: "no answer, and why" is a result the restart step
polls past and the verify step reports. Request headers (an API key) are never part of a
description, so an answer can be shown in the thread as it is. An answer to a request made
with a real key is shown by `describe_status` only (status and error code): its body may echo
the key, or hold another client's rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

BODY_PREVIEW_CHARS = 200
ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")  # an identifier, never free text


@dataclass(frozen=True)
class HttpAnswer:
    status: int | None  # None: the server did not answer
    body: Any = None  # parsed JSON, else the first characters of the text
    error: str | None = None  # why there was no answer

    def describe(self) -> str:
        if self.status is None:
            return f"no answer ({self.error})"
        return f"answered {self.status}: {str(self.body)[:BODY_PREVIEW_CHARS]}"

    def describe_status(self) -> str:
        """Status and error code only (`answered 401 (AUTHENTICATION_ERROR)`): for answers to
        a real key, whose body is never copied anywhere."""
        if self.status is None:
            return f"no answer ({self.error})"
        code = error_code(self.body)
        return f"answered {self.status}" + (f" ({code})" if code else "")


def error_code(body: Any) -> str | None:
    """`{"error": {"code": X}}` (the service's shape), `{"error": X}` or `{"code": X}`, when X
    is an identifier; anything else is not copied."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    for candidate in (error.get("code") if isinstance(error, dict) else error, body.get("code")):
        if isinstance(candidate, str) and ERROR_CODE.match(candidate):
            return candidate
    return None


class HttpProbe:
    """One HTTP client for a series of probes: `async with HttpProbe() as probe: ...`."""

    def __init__(self, timeout_seconds: float = 5.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> HttpAnswer:
        assert self._session is not None, "use HttpProbe as an async context manager"
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as answer:
                text = await answer.text(errors="replace")
                try:
                    body: Any = await answer.json(content_type=None)
                except ValueError:
                    body = text[:BODY_PREVIEW_CHARS]
                return HttpAnswer(answer.status, body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return HttpAnswer(None, error=f"{type(exc).__name__}: {exc}".rstrip(": "))


async def get_once(url: str, timeout_seconds: float = 5.0) -> HttpAnswer:
    async with HttpProbe(timeout_seconds) as probe:
        return await probe.get(url)


def join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")
