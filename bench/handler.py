"""The event handler's own cost, in one process: no sockets, the upstream answers at once.

Run: `python -m bench.handler`. It composes the proxy as `serve` does, hands its
`POST /api/events` endpoint 2,000 distinct requests carrying the benchmark's ExecutorEvent
(so that, as in a server, every request's objects are new), and prints µs per request for
the whole handler, then with the engine's conversion replaced by its result, then with no
extensions (nothing recorded): the differences are what the engine and the recording cost
in place, where their code and data are colder than in a tight loop of one call. The
minimum of `--runs` runs is printed (this machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import uvloop
from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request

from bench.event_path import ANSWER, sample_body
from proxy.compose import compose
from proxy.config import load_settings
from proxy.envelope import Conversion
from proxy.server.events import ENDPOINTS
from proxy.server.forward import Answer
from proxy.server.keys import POOLS, STATE
from proxy.server.upstream import UpstreamPools

_ANSWER = Answer(200, ANSWER.encode(), "application/json", None, None, 0.0001)


class _Upstream:
    host_header = b"127.0.0.1:9"

    async def send(self, request: bytes, *, within: float, connect_timeout: float) -> Answer:
        return _ANSWER


class _Pools:
    def get(self, origin: str, generation: int) -> _Upstream:
        return _Upstream()


class _Reading:
    """What a request body's stream asks of its protocol."""

    _reading_paused = False

    def pause_reading(self) -> None: ...

    def resume_reading(self, **_: Any) -> None: ...


class _Transport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


class _Converted:
    """An engine that hands back one conversion, for the handler without the engine."""

    def __init__(self, conversion: Conversion) -> None:
        self.conversion = conversion

    def convert_event(self, body: bytes, target: str) -> Conversion:
        return self.conversion


async def _measure(app: web.Application, body: bytes, count: int) -> float:
    endpoint, _ = app[ENDPOINTS]["/api/events"]
    loop, reading, transport = asyncio.get_running_loop(), _Reading(), _Transport()
    headers = {
        "Host": "127.0.0.1:8080",
        "Content-Type": "application/json",
        "X-NoETL-Client": "bench",
        "Content-Length": str(len(body)),
    }

    def request() -> web.Request:
        payload = streams.StreamReader(reading, 2**16, loop=loop)  # type: ignore[arg-type]
        payload.feed_data(body)
        payload.feed_eof()
        return make_mocked_request(
            "POST", "/api/events", headers=headers, payload=payload, app=app, transport=transport
        )

    requests = [request() for _ in range(count)]
    started = time.perf_counter()
    for each in requests:
        answer = await endpoint.handle(each)
        assert answer.status == 200, answer.status
    return (time.perf_counter() - started) * 1e6 / count


async def _run(body: bytes, count: int) -> dict[str, float]:
    proxy = compose(load_settings(None))
    app, state = proxy.app, proxy.app[STATE]
    app[POOLS] = cast(UpstreamPools, _Pools())
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)  # as `serve` does after start-up
    await _measure(app, body, 200)  # warm up: plans compiled, caches filled
    figures = {"whole handler": await _measure(app, body, count)}
    snapshot = state.snapshot
    conversion = snapshot.engine.convert_event(body, snapshot.target)
    state.snapshot = replace(snapshot, engine=_Converted(conversion))  # type: ignore[arg-type]
    figures["without the engine"] = await _measure(app, body, count)
    extensions, state.extensions = state.extensions, ()
    figures["without the engine and recording"] = await _measure(app, body, count)
    state.extensions, state.snapshot = extensions, snapshot
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=Path, default=Path(__file__).parents[1] / "spec/samples")
    args = parser.parse_args()
    body = sample_body(args.samples)
    best: dict[str, float] = {}
    for _ in range(args.runs):
        for name, value in uvloop.run(_run(body, args.requests)).items():
            best[name] = min(best.get(name, value), value)
    for name, value in best.items():
        print(f"{name:36s} {value:6.1f} µs/request")


if __name__ == "__main__":
    main()
