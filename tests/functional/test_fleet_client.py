"""`clients --prometheus` transport against a real loopback server that checks a bearer token.

The server stands in for a Prometheus behind an authenticating proxy: it answers the API's
JSON only with the right token, 401 otherwise, and can answer a redirect. The token must
reach it, never be printed, and never follow a redirect.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from proxy.cli import main
from tests.functional.server_support import ServerFactory

TOKEN = "s3cr3t-token-value"
EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


async def authenticating_api(aiohttp_server: ServerFactory, seen: list[str]) -> str:
    async def api(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"status": "error", "error": "unauthorized"}, status=401)
        form = await request.post()
        assert "query" in form
        if request.path.endswith("query_range"):
            return web.json_response(
                {"status": "success", "data": {"resultType": "matrix", "result": []}}
            )
        return web.json_response(EMPTY)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere/api/v1/query")

    app = web.Application()
    app.add_routes(
        [
            web.post("/api/v1/query", api),
            web.post("/api/v1/query_range", api),
            web.post("/moved/api/v1/query", moved),
            web.post("/elsewhere/api/v1/query", api),
        ]
    )
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def run(capsys: pytest.CaptureFixture[str], *args: str, **env: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        code = await asyncio.to_thread(main, ["clients", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_bearer_token_is_sent_never_printed_and_never_redirected(
    aiohttp_server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the token (file or environment) every query carries it and an empty answer is
    "could not tell"; a wrong one is a clear 401 message; a redirect is not followed."""
    seen: list[str] = []
    url = await authenticating_api(aiohttp_server, seen)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")

    code, out = await run(capsys, "--prometheus", url, "--token-file", str(token_file))
    assert code == 2, out
    assert "verdict: could not tell: no envelope-proxy series found in the window" in out
    assert seen
    assert set(seen) == {f"Bearer {TOKEN}"}
    assert TOKEN not in out

    code, out = await run(capsys, "--prometheus", url, ENVELOPE_PROXY_PROMETHEUS_TOKEN=TOKEN)
    assert code == 2
    assert "no envelope-proxy series" in out

    token_file.write_text("wrong", encoding="utf-8")
    code, out = await run(capsys, "--prometheus", url, "--token-file", str(token_file))
    assert code == 2
    assert "answered 401: check the token" in out
    assert "wrong" not in out

    seen.clear()
    code, out = await run(
        capsys, "--prometheus", url + "/moved", ENVELOPE_PROXY_PROMETHEUS_TOKEN=TOKEN
    )
    assert code == 2
    assert "answered a redirect (307)" in out
    assert seen == []  # the redirect target was never asked, so never given the token
    code, out = await run(capsys, "--prometheus", url.replace("http://", "http://user:pw@"))
    assert code == 2
    assert "answered 401" in out  # credentials in the URL are not sent...
    assert "user:pw" not in out  # ...nor shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prometheus", "ftp://example"], "needs an http(s) URL"),
        (["--prometheus", "http://127.0.0.1:1", "--selector", "oops"], "not a list of label"),
        (["--prometheus", "http://127.0.0.1:1", "--token-file", "/nonexistent/t"], "token file"),
        (["--selector", 'job="x"', "--insecure"], "--selector, --insecure need --prometheus"),
    ],
)
async def test_bad_arguments_are_could_not_tell_with_a_message(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out = await run(capsys, *args)
    assert code == 2
    assert message in out


needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs openssl (.ci/run installs it)"
)


@needs_openssl
async def test_tls_is_verified_against_the_ca_file_or_skipped_with_insecure(
    aiohttp_server: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An HTTPS API with a self-signed certificate: refused by default, accepted with it as
    --ca-file, and with --insecure."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def api(request: web.Request) -> web.Response:
        if request.path.endswith("query_range"):
            return web.json_response(
                {"status": "success", "data": {"resultType": "matrix", "result": []}}
            )
        return web.json_response(EMPTY)

    app = web.Application()
    app.add_routes([web.post("/api/v1/query", api), web.post("/api/v1/query_range", api)])
    server = await aiohttp_server(app, ssl=context)
    url = f"https://127.0.0.1:{server.port}"

    code, out = await run(capsys, "--prometheus", url)
    assert code == 2
    assert "CERTIFICATE_VERIFY_FAILED" in out
    for extra in (["--ca-file", str(cert)], ["--insecure"]):
        code, out = await run(capsys, "--prometheus", url, *extra)
        assert code == 2, out
        assert "no envelope-proxy series found" in out, out
