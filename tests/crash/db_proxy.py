"""A TCP proxy in front of PostgreSQL that a test can pause: a bot database that stalls.

While paused, connections stay open and nothing they send arrives (nor any answer): what a
replica sees during a failover, a network partition or a database stuck on I/O. With
`hold_when`, only a connection whose client sends those bytes (a program naming itself as
`application_name` in its startup packet, say) is held, for good, and `held` is set.
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.engine import make_url


class PausableProxy:
    def __init__(self, upstream_host: str, upstream_port: int,
                 hold_when: bytes | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.hold_when = hold_when
        self.held = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @classmethod
    def for_url(cls, url: str, hold_when: bytes | None = None) -> PausableProxy:
        parsed = make_url(url)
        return cls(parsed.host or "127.0.0.1", parsed.port or 5432, hold_when)

    def url_through(self, url: str) -> str:
        """`url` with host and port pointing at this proxy."""
        return make_url(url).set(host="127.0.0.1", port=self.port) \
            .render_as_string(hide_password=False)

    async def __aenter__(self) -> PausableProxy:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    async def close(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        for pipe in (self._pipe(reader, up_writer, self.hold_when),
                     self._pipe(up_reader, writer, None)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    hold_when: bytes | None) -> None:
        try:
            while data := await reader.read(65536):
                if hold_when is not None and hold_when in data:
                    self.held.set()
                    await asyncio.Event().wait()  # this connection never gets through
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
