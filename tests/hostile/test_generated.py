"""Property-based hostile input: generated request heads at the HTTP front, generated deep
JSON at the engine. Bounded: a few dozen examples each, no deadline (the machine is shared)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.envelope import Engine, EnvelopeError, load_rules
from tests.functional.server_support import ServerFactory, Stack, open_raw, wait_for
from tests.hostile.conftest import Captured
from tests.hostile.wire import start_wire_stack
from tests.loopback import WireUpstream

SECRET = "Gen-credential-31337"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# What the proxy (or aiohttp's parser in front of it) may answer a generated request.
EXPECTED = {200, 400, 404, 405, 408, 413, 415, 417, 422, 501, 503, 505}

_TARGET_CHARS = st.sampled_from(
    [
        "/",
        "a",
        "api",
        "events",
        "batch",
        "%0A",
        "%0D",
        "%00",
        "%2F",
        "%2E",
        "..",
        ".",
        "?",
        "&",
        "=",
        "#",
        "%",
        "%zz",
        "\t",
        "\x01",
        "\x7f",
        "\u2028",
        "é",
        " ",
        "token=" + SECRET,
    ]
)
_VALUE_CHARS = st.sampled_from(
    [
        "a",
        "1",
        " ",
        ",",
        ";",
        "chunked",
        "gzip",
        "identity",
        "\t",
        "\x00",
        "\x01",
        "\x1b",
        "\r",
        "\n",
        "\r\n ",
        "\x7f",
        "\x85",
        "é",
        "\u2028",
        "Bearer " + SECRET,
        "-1",
        "+5",
    ]
)
_NAMES = st.sampled_from(
    [
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Content-Type",
        "Expect",
        "Authorization",
        "X-NoETL-Client",
        "User-Agent",
        "Connection",
        "Upgrade",
        "Te",
        "Trailer",
        "X A",
        "X-A ",
        "",
        ":",
        "Cookie",
    ]
)


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "OPTIONS", "CONNECT", "G\x01T"]))
    target = "/" + "".join(draw(st.lists(_TARGET_CHARS, max_size=8)))
    target = draw(st.sampled_from([target, "/api/events", "/api/events/batch", "*", "http://x/"]))
    version = draw(
        st.sampled_from(
            ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "", "http/1.1"]
        )
    )
    line = f"{method} {target} {version}".rstrip() if version else f"{method} {target}"
    headers = ["Host: p"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(_NAMES)
        value = "".join(draw(st.lists(_VALUE_CHARS, max_size=4)))
        headers.append(f"{name}: {value}")
    body = draw(st.sampled_from([b"", b"{}", b"0\r\n\r\n", b"5\r\n{}\r\n", b'{"a":1}']))
    return ("\r\n".join([line, *headers]) + "\r\n\r\n").encode("utf-8") + body


async def _answer_ok(
    head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(OK)
    await writer.drain()


async def _exchange(stack: Stack, request: bytes) -> bytes:
    reader, writer = await open_raw(stack)
    try:
        writer.write(request)
        await writer.drain()
        writer.write_eof()  # nothing more is coming: the proxy must answer or close
        async with asyncio.timeout(5):
            return await reader.read(65536)
    except ConnectionError:
        return b""
    finally:
        writer.close()


@pytest.fixture
async def wire_stack(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> Any:
    upstream = WireUpstream(_answer_ok)
    stack = await start_wire_stack(
        aiohttp_server, session, upstream, {"limits.body_read_timeout_seconds": 1}
    )
    yield stack
    await upstream.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(head=request_heads())
# A client that half-closes right after a pass-through GET is gone by the time the answer's
# head is written: that is the client leaving, not an error of the proxy.
@example(head=b"GET / HTTP/1.1\r\nHost: p\r\n\r\n")
@example(head=b"GET // HTTP/1.1\r\n\r\n")
async def test_generated_request_heads_get_a_sane_answer_and_leak_nothing(
    wire_stack: Stack, all_logs: Captured, head: bytes
) -> None:
    """Whatever head arrives: an HTTP/1.x answer with an expected status (never a 500, never
    the client's odd version echoed) or a closed connection; no secret or control character
    in the log; every slot given back."""
    answer = await _exchange(wire_stack, head)
    if answer:
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), status_line
        assert int(status_line.split(b" ")[1]) in EXPECTED, (head, status_line)
    await wait_for(lambda: wire_stack.state.inflight == 0, within=5)
    for record in all_logs.records:
        if record.name.startswith("aiohttp.access"):
            continue
        text = all_logs.format(record)
        assert SECRET not in text, text
        assert all(c.isprintable() or c == "\n" for c in text), repr(text)
        if record.levelno >= logging.ERROR:
            pytest.fail(f"an ERROR was logged: {text}")
    all_logs.records.clear()


_ENGINE = Engine(load_rules(None))
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=5),
    st.floats(allow_nan=False, allow_infinity=False),
)
_json = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def deep_documents(draw: st.DrawFn) -> bytes:
    """A generated JSON value wrapped in up to a few thousand arrays/objects, placed at the
    top or inside an envelope field."""
    value = json.dumps(draw(_json))
    depth = draw(st.integers(0, 3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"k":', "}"), ('{"a":[', "]}")]))
    nested = opener * depth + value + closer * depth
    where = draw(st.sampled_from(["top", "payload", "result", "meta"]))
    if where == "top":
        return nested.encode()
    return (
        '{"execution_id":"1","event_type":"x","node_name":"n","node_type":"t",'
        f'"{where}":{nested}}}'
    ).encode()


@settings(max_examples=80, deadline=None)
@given(body=deep_documents())
def test_generated_deep_json_gets_only_engine_errors(body: bytes) -> None:
    for call in (
        lambda: _ENGINE.detect(body),
        lambda: _ENGINE.convert(body, "executor_event"),
        lambda: _ENGINE.convert_batch(body, "event_request"),
    ):
        with contextlib.suppress(EnvelopeError):  # anything else (RecursionError) fails
            call()
