"""A loopback OTLP/HTTP trace sink for the benchmark: accepts `POST /v1/traces`, counts spans.

`python -m bench._otlp_sink --port P` decodes every export (protobuf, gzip or plain) only to
count its spans, answers an empty `ExportTraceServiceResponse`, and reports
`{"exports": N, "spans": M}` on `GET /stats`, so the benchmark can say how many of the
spans the proxy produced were exported rather than dropped.
"""

from __future__ import annotations

import argparse
import gzip

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
COUNTS = web.AppKey("counts", dict[str, int])


def span_count(body: bytes) -> int:
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(
        len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans
    )


async def receive(request: web.Request) -> web.Response:
    counts = request.app[COUNTS]
    counts["exports"] += 1
    counts["spans"] += span_count(await request.read())
    return web.Response(
        body=ExportTraceServiceResponse().SerializeToString(), headers={"Content-Type": PROTOBUF}
    )


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[COUNTS])


def create_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[COUNTS] = {"exports": 0, "spans": 0}
    app.router.add_post("/v1/traces", receive)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
