"""GET requests against the api being rolled back, answered as plain values.

A probe never raises for a network problem: "no answer, and why" is a result the restart step
polls past and the verify step reports. Request headers (an API key) are never part of a
description, so an answer can be shown in the thread as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

BODY_PREVIEW_CHARS = 200


@dataclass(frozen=True)
class HttpAnswer:
    status: int | None  # None: the server did not answer
    body: Any = None  # parsed JSON, else the first characters of the text
    error: str | None = None  # why there was no answer

    def describe(self) -> str:
        if self.status is None:
            return f"no answer ({self.error})"
        return f"answered {self.status}: {str(self.body)[:BODY_PREVIEW_CHARS]}"


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
