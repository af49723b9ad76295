"""The settings models: every section's fields, defaults and validation, and `Settings`.

Every model forbids unknown keys and is immutable. A field marked `START_ONLY` is read once
at start: a live reload reports a change to it and keeps the running value (`restart.py`).
Also here: the parsing helpers the server shares with validation (`split_host_port`,
`parse_client_source`, `resolve_machine_id`) and `engine_options`.
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from proxy.envelope import EngineOptions


@dataclass(frozen=True, slots=True)
class StartOnly:
    """Field marker (`Annotated[..., START_ONLY]`): the setting is read once at start."""


START_ONLY = StartOnly()

_RELEASE = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,6}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)


def split_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets) as (host, port); raises ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"must be HOST:PORT, such as 0.0.0.0:8080 (got {value!r})")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(
                f"an IPv6 host must be in brackets, such as [::1]:8080 (got {value!r})"
            )
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host must be in brackets, such as [::1]:8080 (got {value!r})")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be 0..65535 (got {port})")
    return host, port


def _host_port(value: str) -> str:
    split_host_port(value)
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValueError(f"has an invalid port ({exc})") from None
    return value.rstrip("/")


def _version_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f'write the release as a quoted string such as "2.9.0" (got {value!r})')
    return value


def _version(value: str) -> str:
    if value in ("auto", "v1", "v2") or _RELEASE.match(value):
        return value
    raise ValueError(f'must be auto, v1, v2 or a release X.Y.Z such as "2.9.0" (got {value!r})')


def _no_credentials(value: str) -> str:
    if "@" in urlsplit(value).netloc:
        raise ValueError(
            "must not carry credentials (user:password@): NoETL's /api/events takes no "
            "authentication, and credentials in a URL end up in logs and dashboards"
        )
    return value


ClientSourceKind = Literal["header", "worker_id", "user_agent", "peer"]


@dataclass(frozen=True, slots=True)
class ClientSource:
    """One parsed `clients.sources` entry: its kind and, for `header`, the header name."""

    kind: ClientSourceKind
    header: str | None = None


_PLAIN_SOURCES: dict[str, ClientSourceKind] = {
    "worker_id": "worker_id",
    "user_agent": "user_agent",
    "peer": "peer",
}


def parse_client_source(spec: str) -> ClientSource:
    """`header:<Name>`, `worker_id`, `user_agent` or `peer`; raises ValueError otherwise."""
    if spec.startswith("header:"):
        name = spec.removeprefix("header:")
        if _HEADER_NAME.match(name):
            return ClientSource("header", name)
    elif spec in _PLAIN_SOURCES:
        return ClientSource(_PLAIN_SOURCES[spec])
    raise ValueError(f"must be header:<Header-Name>, worker_id, user_agent or peer (got {spec!r})")


def _client_source(value: str) -> str:
    parse_client_source(value)
    return value


AUTO_MACHINE_ID = "auto"
MAX_MACHINE_ID = 1023


def _machine_id(value: Any) -> Any:
    if value == AUTO_MACHINE_ID:
        return value
    if isinstance(value, str) and value.isdigit():  # from the environment
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_MACHINE_ID:
        return value
    raise ValueError(f"must be auto or an integer 0..{MAX_MACHINE_ID} (got {value!r})")


def resolve_machine_id(setting: int | str, hostname: str | None = None) -> int:
    """The snowflake machine id an `envelope.machine_id` setting stands for.

    `auto` hashes the host name (a pod's name in Kubernetes), so every pod of a Deployment
    gets its own id without configuration; the same name always gives the same id.
    """
    if isinstance(setting, int):
        return setting
    name = socket.gethostname() if hostname is None else hostname
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_MACHINE_ID + 1)


HostPort = Annotated[str, AfterValidator(_host_port)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
UpstreamUrl = Annotated[str, AfterValidator(_http_url), AfterValidator(_no_credentials)]
UpstreamVersion = Annotated[str, BeforeValidator(_version_text), AfterValidator(_version)]
ClientSourceSpec = Annotated[str, AfterValidator(_client_source)]
MachineId = Annotated[int | Literal["auto"], BeforeValidator(_machine_id)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSettings(_Section):
    url: UpstreamUrl = "http://127.0.0.1:8082"
    version: UpstreamVersion = "auto"
    probe_interval_seconds: Seconds = 30.0
    connect_timeout_seconds: Seconds = 2.0
    timeout_seconds: Seconds = 25.0
    pool_size: Annotated[int, Field(ge=1, le=100_000), START_ONLY] = 100


class LimitSettings(_Section):
    max_body_bytes: Annotated[int, Field(ge=1, le=1 << 30)] = 2 * 1024 * 1024
    max_json_depth: Annotated[int, Field(ge=1, le=1024)] = 64
    batch_max_items: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    max_inflight: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    # Bodies of event requests being handled, summed as their bytes arrive.
    max_inflight_bytes: Annotated[int, Field(ge=1, le=1 << 40)] = 64 * 1024 * 1024
    body_read_timeout_seconds: Seconds = 10.0
    keepalive_timeout_seconds: Annotated[Seconds, START_ONLY] = 15.0
    # One client address's share of max_inflight / max_inflight_bytes (None: half of it).
    max_inflight_per_peer: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_inflight_bytes_per_peer: Annotated[int, Field(ge=1, le=1 << 40)] | None = None
    # Bodies of pass-through requests (streamed, never held); None: no limit.
    max_passthrough_body_bytes: Annotated[int, Field(ge=0, le=1 << 50)] | None = None

    @model_validator(mode="after")
    def _one_body_fits(self) -> LimitSettings:
        if self.max_inflight_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least "
                f"max_body_bytes ({self.max_body_bytes}), or no body of the largest allowed "
                "size could ever be accepted"
            )
        per_peer = self.max_inflight_bytes_per_peer
        if per_peer is not None and per_peer < self.max_body_bytes:
            raise ValueError(
                f"max_inflight_bytes_per_peer ({per_peer}) must be at least "
                f"max_body_bytes ({self.max_body_bytes}), or no body of the largest allowed "
                "size could ever be accepted"
            )
        return self

    @property
    def peer_requests(self) -> int:
        """In-flight requests one client address may have (`max_inflight_per_peer`)."""
        if self.max_inflight_per_peer is not None:
            return self.max_inflight_per_peer
        return max(self.max_inflight // 2, 1)

    @property
    def peer_bytes(self) -> int:
        """Event body bytes one client address may have in flight."""
        if self.max_inflight_bytes_per_peer is not None:
            return self.max_inflight_bytes_per_peer
        return max(self.max_inflight_bytes // 2, self.max_body_bytes)


class EnvelopeSettings(_Section):
    normalise_status: bool = True
    mint: Literal["auto", "always", "never"] = "auto"
    machine_id: Annotated[MachineId, START_ONLY] = 0


class LifecycleSettings(_Section):
    drain_seconds: NonNegativeSeconds = 5.0
    # The server's own handler deadline is fixed when it starts.
    shutdown_timeout_seconds: Annotated[NonNegativeSeconds, START_ONLY] = 20.0


class ClientsSettings(_Section):
    sources: tuple[ClientSourceSpec, ...] = (
        "header:X-NoETL-Client",
        "worker_id",
        "user_agent",
        "peer",
    )
    max_clients: Annotated[int, Field(ge=1, le=1_000_000)] = 500
    state_file: Path | None = None
    sunset_window_seconds: Seconds = 86400.0

    @field_validator("state_file", mode="before")
    @classmethod
    def _empty_means_off(cls, value: object) -> object:
        # Helm values and env vars say "off" with an empty string; Path("") would be ".".
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_header_source(self) -> ClientsSettings:
        headers = [spec for spec in self.sources if spec.startswith("header:")]
        if len(headers) > 1:
            raise ValueError(
                f"sources may name one header only (got {', '.join(headers)}); the proxy "
                "reads one identity header per request"
            )
        return self


class TracingSettings(_Section):
    otlp_endpoint: HttpUrl | None = None
    service_name: Annotated[str, Field(min_length=1)] = "envelope-proxy"


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)]
_LOGGER_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _logger_name(value: str) -> str:
    if not _LOGGER_NAME.match(value):
        raise ValueError(f"must be a logger name such as proxy.server.reload (got {value!r})")
    return value


LoggerName = Annotated[str, AfterValidator(_logger_name)]


class LogSettings(_Section):
    format: Literal["text", "json"] = "text"
    level: LogLevel = "info"
    access: bool = False  # one line per request on the proxy port (logger proxy.server.access_log)
    # Per-logger levels over `level`, by logger name: {"proxy": "debug"} is the whole proxy.
    levels: dict[LoggerName, LogLevel] = {}


class QuarantineSettings(_Section):
    """Where refused bodies are kept (see `proxy.quarantine`); off unless enabled."""

    enabled: bool = False
    dir: Path | None = None
    # The whole store, all segments of all workers; the oldest segment goes first.
    max_bytes: Annotated[int, Field(ge=64 * 1024, le=1 << 40)] = 256 * 1024 * 1024

    @field_validator("dir", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _dir_when_enabled(self) -> QuarantineSettings:
        if self.enabled and self.dir is None:
            raise ValueError("dir must be set when the quarantine is enabled")
        return self


Mode = Literal["enforce", "observe"]


class Settings(_Section):
    """The whole configuration; immutable, so a request can keep the snapshot it started with."""

    # Fields are in the order a reload lists the start-only ones it could not apply.
    listen: Annotated[HostPort, START_ONLY] = "0.0.0.0:8080"
    admin_listen: Annotated[HostPort, START_ONLY] = "0.0.0.0:9090"
    rules_dir: Path | None = None
    workers: Annotated[int, Field(ge=1, le=256), START_ONLY] = 1
    upstream: UpstreamSettings = UpstreamSettings()
    limits: LimitSettings = LimitSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    envelope: EnvelopeSettings = EnvelopeSettings()
    clients: Annotated[ClientsSettings, START_ONLY] = ClientsSettings()
    tracing: Annotated[TracingSettings, START_ONLY] = TracingSettings()
    shadow: Annotated[bool, START_ONLY] = False
    log: Annotated[LogSettings, START_ONLY] = LogSettings()

    # enforce: forward the converted body, refuse what the engine refuses. observe: forward
    # every event body as received and only record what enforce would have done.
    mode: Mode = "enforce"
    quarantine: Annotated[QuarantineSettings, START_ONLY] = QuarantineSettings()

    @field_validator("admin_listen")
    @classmethod
    def _own_port(cls, value: str, info: ValidationInfo) -> str:
        listen = info.data.get("listen")
        if listen is not None and _same_socket(listen, value):
            raise ValueError(
                f"must not be the proxy's own address (listen is {listen}): both listeners "
                "would bind one port; give the admin port its own, such as 0.0.0.0:9090"
            )
        return value


_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})


def _same_socket(first: str, second: str) -> bool:
    """Whether two `HOST:PORT` listeners would bind the same port (port 0 picks a free one)."""
    host_a, port_a = split_host_port(first)
    host_b, port_b = split_host_port(second)
    if port_a != port_b or port_a == 0:
        return False
    return host_a == host_b or host_a in _WILDCARD_HOSTS or host_b in _WILDCARD_HOSTS


def engine_options(settings: Settings, machine_id: int) -> EngineOptions:
    """The engine options a configuration stands for (serve and `convert --config` share it)."""
    from proxy.envelope import EngineOptions

    return EngineOptions(
        normalise_status=settings.envelope.normalise_status,
        mint=settings.envelope.mint,
        machine_id=machine_id,
        max_depth=settings.limits.max_json_depth,
        batch_max_items=settings.limits.batch_max_items,
    )
