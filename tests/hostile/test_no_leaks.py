"""No credential and no control character a client sent ever reaches the logs, the spans,
`/clients` or `/metrics`, whatever headers, query, path or body fields carry them."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import Settings
from proxy.server.app import server_kwargs
from tests.functional.test_observability_proxy import (
    Stack,
    start_stack,
)
from tests.hostile.conftest import Captured
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.usefixtures("clean_otel_env")


SECRET = "Zq9-credential-7Yx"
# C0 (but tab), DEL, C1, line and paragraph separators, bidi overrides.
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
HOSTILE_TEXT = "evil\u2028INFO forged\u0085\u202eend"


def _event(worker_id: str) -> bytes:
    return orjson.dumps(
        {
            "execution_id": "478775660589088776",
            "catalog_id": "478775660589088001",
            "node_id": "fetch",
            "node_name": "fetch",
            "node_type": "python",
            "event_type": "call.done",
            "status": "COMPLETED",
            "worker_id": worker_id,
            "result": {"token": SECRET},
        }
    )


async def _raw(stack: Stack, request: bytes) -> bytes:
    host, port = str(stack.proxy.make_url("")).removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            return await reader.read(65536)
    finally:
        writer.close()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


async def test_nothing_a_client_sent_as_secret_or_control_reaches_any_output(
    aiohttp_server: Any, receiver: OtlpReceiver, all_logs: Captured
) -> None:
    stack = await start_stack(
        aiohttp_server,
        {
            "tracing": {"otlp_endpoint": receiver.endpoint},
            "clients": {"sources": ["header:X-NoETL-Client", "worker_id", "user_agent"]},
        },
    )
    hostile_utf8 = HOSTILE_TEXT.encode()
    requests = [
        # An accepted event: credentials in headers and query, hostile client id and agent.
        (
            b"POST /api/events?token=" + SECRET.encode() + b" HTTP/1.1\r\nHost: p\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + SECRET.encode() + b"\r\n"
            b"Cookie: s=" + SECRET.encode() + b"\r\nX-NoETL-Client: " + hostile_utf8 + b"\r\n"
            b"User-Agent: " + hostile_utf8 + b"\r\n",
            _event("w-1"),
        ),
        # The identity from the body: a worker id full of control characters.
        (
            b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n",
            _event("w\u001b[31m\r\nINFO forged\u2028"),
        ),
        # Refused by the engine, with a secret in the refused body.
        (
            b"POST /api/events HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
            b"X-NoETL-Client: " + hostile_utf8 + b"\r\n",
            b'{"token": "' + SECRET.encode() + b'", "oops": ',
        ),
        # Pass-through with credentials and hostile path bytes.
        (
            b"GET /api/x%0D%0A%1B[31m?api_key="
            + SECRET.encode()
            + b" HTTP/1.1\r\nHost: p\r\nAuthorization: Basic "
            + SECRET.encode()
            + b"\r\n",
            b"",
        ),
        # Malformed requests the parser refuses.
        (
            b"GET /x HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer " + SECRET.encode() + b"\x01\r\n",
            b"",
        ),
        (b"GET /x?token=" + SECRET.encode() + b"\x1b HTTP/1.1\r\nHost: p\r\n", b""),
    ]
    statuses = []
    for head, body in requests:
        length = b"Content-Length: %d\r\n" % len(body) if body else b""
        answer = await _raw(stack, head + length + b"\r\n" + body)
        statuses.append(int(answer.split(b" ", 2)[1]))
    assert [statuses[i] for i in (0, 1, 2, 4, 5)] == [200, 200, 400, 400, 400], statuses

    spans = await stack.spans(receiver, 3)
    clients = (await stack.admin_get("/clients")).decode()
    metrics = (await stack.admin_get("/metrics")).decode()
    # The proxy keeps no access log (its server gets access_log=None); the access lines
    # captured here are the upstream emulator's, which rightly sees the query it was sent.
    assert server_kwargs(Settings())["access_log"] is None
    proxy_logs = [
        all_logs.format(record)
        for record in all_logs.records
        if not record.name.startswith(("aiohttp.access", "urllib3"))
    ]
    outputs = {
        "logs": proxy_logs,
        "spans": [s for span in spans for s in (span.name, *_strings(span.attributes))],
        "clients": _strings(orjson.loads(clients)),
        "metrics": [
            value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            for value in (sample.name, *sample.labels.values())
        ],
    }
    assert any("evil" in s for s in outputs["clients"]), outputs["clients"]  # it was recorded
    for where, texts in outputs.items():
        for text in texts:
            assert SECRET not in text, (where, text[:300])
            found = CONTROL.findall(text if where != "logs" else text.replace("\n", ""))
            assert not found, (where, found, text[:300])
