"""The HTTP clients `bench.clients` measures, each behind the same two calls: `post()` one
event (status and body of the answer) and `close()`.

`UpstreamPool` is the event path's own client; the others are imported only when their
sender is built, so a worker process loads one client library only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

import aiohttp
from yarl import URL

from proxy.server.upstream import MAX_ANSWER_BYTES, UpstreamPool, request_bytes

TARGET = "/api/events"
HEADERS = [
    (b"Content-Type", b"application/json"),
    (b"X-NoETL-Client", b"bench"),
    (b"X-Forwarded-For", b"127.0.0.1"),
    (b"X-Forwarded-Proto", b"http"),
]
TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0
# Distributions whose versions the report names, per client.
LIBRARIES = {
    "UpstreamPool": ("envelope-proxy", "httptools"),
    "aiohttp": ("aiohttp",),
    "aiosonic": ("aiosonic",),
    "httpcore": ("httpcore", "h11", "anyio", "sniffio"),
    "pyreqwest": ("pyreqwest",),
}


class Sender(Protocol):
    async def post(self) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class _Pool:
    def __init__(self, origin: str, size: int, body: bytes) -> None:
        self._pool = UpstreamPool(origin, size)
        self._target = TARGET.encode()
        self._body = body

    async def post(self) -> tuple[int, bytes]:
        request = request_bytes(b"POST", self._target, self._pool.host_header, HEADERS, self._body)
        answer = await self._pool.send(request, within=TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
        return answer.status, answer.body

    async def close(self) -> None:
        self._pool.close()


class _Aiohttp:
    def __init__(self, origin: str, size: int, body: bytes) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=size, limit_per_host=size),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._url = URL(origin + TARGET)
        self._headers = {name.decode(): value.decode() for name, value in HEADERS}
        self._timeout = aiohttp.ClientTimeout(total=TIMEOUT, sock_connect=CONNECT_TIMEOUT)
        self._body = body

    async def post(self) -> tuple[int, bytes]:
        async with self._session.post(
            self._url,
            data=self._body,
            headers=self._headers,
            timeout=self._timeout,
            allow_redirects=False,
        ) as response:
            length = response.content_length
            if length is not None and length > MAX_ANSWER_BYTES:
                raise ValueError("the upstream's answer is too large")
            return response.status, await response.read()

    async def close(self) -> None:
        await self._session.close()


class _Aiosonic:
    def __init__(self, origin: str, size: int, body: bytes) -> None:
        from aiosonic.client import HTTPClient
        from aiosonic.connectors import TCPConnector
        from aiosonic.pools import PoolConfig
        from aiosonic.timeout import Timeouts

        timeouts = Timeouts(
            sock_connect=CONNECT_TIMEOUT, sock_read=TIMEOUT, request_timeout=TIMEOUT
        )
        pools = {":default": PoolConfig(size=size, max_conn_requests=None)}
        self._client = HTTPClient(connector=TCPConnector(pool_configs=pools, timeouts=timeouts))
        self._url = origin + TARGET
        self._headers = {name.decode(): value.decode() for name, value in HEADERS}
        self._body = body

    async def post(self) -> tuple[int, bytes]:
        response = await self._client.post(self._url, data=self._body, headers=self._headers)
        body = await response.content()
        return int(response.status_code), bytes(body)

    async def close(self) -> None:
        await self._client.aclose()


class _Httpcore:
    def __init__(self, origin: str, size: int, body: bytes) -> None:
        import httpcore

        self._pool = httpcore.AsyncConnectionPool(
            max_connections=size, max_keepalive_connections=size, http1=True, http2=False
        )
        self._url = origin + TARGET
        self._headers = HEADERS
        self._extensions: dict[str, Any] = {
            "timeout": {
                "connect": CONNECT_TIMEOUT,
                "read": TIMEOUT,
                "write": TIMEOUT,
                "pool": TIMEOUT,
            }
        }
        self._body = body

    async def post(self) -> tuple[int, bytes]:
        response = await self._pool.request(
            "POST",
            self._url,
            headers=self._headers,
            content=self._body,
            extensions=self._extensions,
        )
        return response.status, response.content

    async def close(self) -> None:
        await self._pool.aclose()


class _Pyreqwest:
    def __init__(self, origin: str, size: int, body: bytes) -> None:
        from pyreqwest.client import ClientBuilder

        self._client = (
            ClientBuilder()
            .max_connections(size)
            .pool_max_idle_per_host(size)
            .timeout(timedelta(seconds=TIMEOUT))
            .connect_timeout(timedelta(seconds=CONNECT_TIMEOUT))
            .follow_redirects(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .http1_only()
            .build()
        )
        self._url = origin + TARGET
        self._headers = {name.decode(): value.decode() for name, value in HEADERS}
        self._body = body

    async def post(self) -> tuple[int, bytes]:
        request = self._client.post(self._url).headers(self._headers).body_bytes(self._body)
        response = await request.build().send()
        return response.status, bytes(await response.bytes())

    async def close(self) -> None:
        await self._client.close()


SENDERS: dict[str, type[_Pool | _Aiohttp | _Aiosonic | _Httpcore | _Pyreqwest]] = {
    "UpstreamPool": _Pool,
    "aiohttp": _Aiohttp,
    "aiosonic": _Aiosonic,
    "httpcore": _Httpcore,
    "pyreqwest": _Pyreqwest,
}
