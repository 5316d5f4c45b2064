"""A mail sink for benchmarks: N aiosmtpd processes accepting and dropping messages on one port.

One Python SMTP server is one core; on a small machine it, not the sender, sets the pace. Here
each process binds the same port with SO_REUSEPORT and the kernel spreads connections over
them. With a reply delay every final reply line waits that long first, as a relay across a
network would make each command wait a round trip.

    python -m bench.smtp_sink --port 2525 [--reply-delay-ms 5]   # one process (used by Sink)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import AnyStr

from aiosmtpd.smtp import SMTP


class DelayedSMTP(SMTP):
    """aiosmtpd answering each command after `reply_delay` seconds (multi-line: once)."""

    reply_delay = 0.0

    async def push(self, status: AnyStr) -> None:
        final = status[3:4] not in ("-", b"-")  # "250-..." lines continue a reply
        if self.reply_delay and final:
            await asyncio.sleep(self.reply_delay)
        await super().push(status)


class DropHandler:
    """Accepts every message and keeps nothing."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


async def serve(port: int, reply_delay: float) -> None:
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every multi-line reply waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    loop = asyncio.get_running_loop()
    handler = DropHandler()
    DelayedSMTP.reply_delay = reply_delay
    # A fixed hostname: otherwise aiosmtpd resolves the machine's FQDN on every connection.
    server = await loop.create_server(
        lambda: DelayedSMTP(handler, hostname="sink.bench", loop=loop), sock=sock)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


@dataclass
class Sink:
    """`processes` sink processes on `port`; `cpu_seconds()` is their CPU time so far."""

    port: int
    processes: int = 1
    reply_delay_ms: float = 0.0
    _children: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def __aenter__(self) -> Sink:
        for _ in range(self.processes):
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.smtp_sink", "--port", str(self.port),
                "--reply-delay-ms", str(self.reply_delay_ms), stdout=asyncio.subprocess.PIPE)
            self._children.append(child)
            assert child.stdout is not None
            async with asyncio.timeout(15):
                if (await child.stdout.readline()).strip() != b"ready":
                    raise RuntimeError("SMTP sink process did not start")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for child in self._children:
            if child.returncode is None:
                child.terminate()
        for child in self._children:
            await child.wait()

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for child in self._children:
            with open(f"/proc/{child.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.reply_delay_ms / 1000))


if __name__ == "__main__":
    main()
