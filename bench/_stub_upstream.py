"""A minimal stub upstream for the benchmarks when nginx is not installed: every request
gets the same `200` JSON answer (the one `bench.event_path`'s nginx gives), on keep-alive
connections.

`python -m bench._stub_upstream --port PORT` on 127.0.0.1, on uvloop. Raw asyncio protocols
and no HTTP parser: it finds the end of the head, reads `Content-Length` bytes of body and
answers, so that it costs far less per request than any client under test.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import uvloop

from bench._procs import LOOPBACK
from bench.event_path import ANSWER

_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(ANSWER)).encode()
    + b"\r\nConnection: keep-alive\r\n\r\n"
    + ANSWER.encode()
)
_MAX_HEAD = 64 * 1024


class _Stub(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        answers = 0
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            whole = end + 4 + _content_length(bytes(self._buffer[:end]))
            if len(self._buffer) < whole:
                break
            del self._buffer[:whole]
            answers += 1
        if answers:
            self._transport.write(_RESPONSE * answers)
        elif len(self._buffer) > _MAX_HEAD:
            self._transport.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Stub, LOOPBACK, port, backlog=1024)
    print(f"stub upstream on http://{LOOPBACK}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(_serve(args.port))


if __name__ == "__main__":
    main()
