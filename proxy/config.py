"""The proxy's settings: one validated, immutable `Settings` from defaults, file, env and flags.

Precedence, lowest first: built-in defaults, the YAML file (`--config FILE`), environment
variables `ENVELOPE_PROXY_*` (nesting with `__`, e.g. `ENVELOPE_PROXY_UPSTREAM__URL`), then
command-line flags. Every model forbids unknown keys, so a typo fails at start (and at
reload) with a `ConfigError` naming the setting, where it came from and what is wrong.

`redacted()` is what `/config` shows; `check_config()` is what `envelope-proxy check` runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

if TYPE_CHECKING:
    from proxy.envelope import EngineOptions

ENV_PREFIX = "ENVELOPE_PROXY_"
ENV_NESTED_DELIMITER = "__"

# Settings read once at start: changing them in a live reload is reported, not applied.
RESTART_ONLY: tuple[str, ...] = (
    "listen",
    "admin_listen",
    "workers",
    "upstream.pool_size",
    "limits.keepalive_timeout_seconds",
    "lifecycle.shutdown_timeout_seconds",
    "envelope.machine_id",
    "clients",
    "tracing",
    "shadow",
    "log",
    "quarantine",
)

_RELEASE = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,6}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
_SECRET_KEY = re.compile(r"(passw|secret|token|api_?key|authori[sz]ation|credential)", re.I)


class ConfigError(Exception):
    """Invalid configuration; `problems` holds one line per problem, each naming the setting."""

    def __init__(self, problems: list[str] | tuple[str, ...]):
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


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
    pool_size: Annotated[int, Field(ge=1, le=100_000)] = 100


class LimitSettings(_Section):
    max_body_bytes: Annotated[int, Field(ge=1, le=1 << 30)] = 2 * 1024 * 1024
    max_json_depth: Annotated[int, Field(ge=1, le=1024)] = 64
    batch_max_items: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    max_inflight: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    # Bodies of event requests being handled, summed as their bytes arrive.
    max_inflight_bytes: Annotated[int, Field(ge=1, le=1 << 40)] = 64 * 1024 * 1024
    body_read_timeout_seconds: Seconds = 10.0
    keepalive_timeout_seconds: Seconds = 15.0
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
    machine_id: MachineId = 0


class LifecycleSettings(_Section):
    drain_seconds: NonNegativeSeconds = 5.0
    shutdown_timeout_seconds: NonNegativeSeconds = 20.0


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

    listen: HostPort = "0.0.0.0:8080"
    admin_listen: HostPort = "0.0.0.0:9090"
    rules_dir: Path | None = None
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    upstream: UpstreamSettings = UpstreamSettings()
    limits: LimitSettings = LimitSettings()
    envelope: EnvelopeSettings = EnvelopeSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    clients: ClientsSettings = ClientsSettings()
    shadow: bool = False
    tracing: TracingSettings = TracingSettings()
    log: LogSettings = LogSettings()

    # enforce: forward the converted body, refuse what the engine refuses. observe: forward
    # every event body as received and only record what enforce would have done.
    mode: Mode = "enforce"
    quarantine: QuarantineSettings = QuarantineSettings()

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


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' env parsing (prefix, `__` nesting, JSON lists) over any mapping."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(
            Settings,  # type: ignore[arg-type]  # only its fields are read
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=ENV_NESTED_DELIMITER,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, False, False, None)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {path}: cannot read it ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"config file {path}: not UTF-8 text"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {path}: invalid YAML: {exc}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path}: the top level must be a mapping of settings"])
    return data


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Flags as a nested dict; keys may be dotted (`upstream.url`) or already nested."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping):
            node.setdefault(leaf, {}).update(_nest(value))
        else:
            node[leaf] = value
    return nested


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _has(data: Mapping[str, Any], loc: tuple[str | int, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _origin(loc: tuple[str | int, ...], layers: list[tuple[str, Mapping[str, Any]]]) -> str | None:
    """Which layer supplied the value at `loc` (the highest one wins, as in the merge)."""
    names = tuple(part for part in loc if isinstance(part, str))
    for where, data in reversed(layers):
        if _has(data, names):
            if where.startswith("environment"):
                return "environment " + ENV_PREFIX + ENV_NESTED_DELIMITER.join(names).upper()
            return str(where)
    return None


def _describe(
    exc: ValidationError,
    layers: list[tuple[str, Mapping[str, Any]]],
) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        name = ".".join(str(part) for part in loc) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] not in ("value_error", "assertion_error") and "input" in error:
            message = f"{message} (got {error['input']!r})"
        origin = _origin(loc, layers)
        suffix = f" [from {origin}]" if origin else ""
        problems.append(f"{name}: {message}{suffix}")
    return problems


def load_settings(
    config_file: Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < `config_file` < `ENVELOPE_PROXY_*` in `environ` (os.environ) < overrides."""
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_file is not None:
        layers.append((f"config file {config_file}", _read_file(config_file)))
    env = os.environ if environ is None else environ
    try:
        env_data = _EnvSource(env)()
    except Exception as exc:  # pydantic-settings raises SettingsError on malformed JSON values
        raise ConfigError([_env_problem(exc, env)]) from None
    layers.append((f"environment {ENV_PREFIX}*", env_data))
    if overrides:
        layers.append(("command line", _nest(overrides)))
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = _merge(merged, data)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layers)) from None


def _env_problem(exc: Exception, env: Mapping[str, str]) -> str:
    """Name the variables behind an env parsing failure (pydantic-settings names the field)."""
    match = re.search(r'field "(\w+)"', str(exc))
    if match is None:
        return f"environment {ENV_PREFIX}*: {exc}"
    prefix = f"{ENV_PREFIX}{match[1]}".upper()
    names = [
        name
        for name in sorted(env)
        if name.upper() == prefix or name.upper().startswith(prefix + ENV_NESTED_DELIMITER)
    ]
    not_json = [name for name in names if not _is_json(env[name])]
    shown = ", ".join(f"{name}={env[name]!r}" for name in (not_json or names))
    return (
        f"environment {shown or prefix}: not valid JSON; a list or a section is given as JSON,"
        f' e.g. {ENV_PREFIX}CLIENTS__SOURCES=\'["header:X-Team","peer"]\''
    )


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """Names of start-only settings that differ between two configurations."""
    changed = []
    for name in RESTART_ONLY:
        section, _, field = name.partition(".")
        before: Any = getattr(old, section)
        after: Any = getattr(new, section)
        if field:
            before, after = getattr(before, field), getattr(after, field)
        if before != after:
            changed.append(name)
    return changed


def keep_start_only(old: Settings, new: Settings) -> Settings:
    """`new` with every start-only setting taken from `old` (what a live reload applies)."""
    return new.model_copy(
        update={
            "listen": old.listen,
            "admin_listen": old.admin_listen,
            "workers": old.workers,
            "upstream": new.upstream.model_copy(update={"pool_size": old.upstream.pool_size}),
            "limits": new.limits.model_copy(
                update={"keepalive_timeout_seconds": old.limits.keepalive_timeout_seconds}
            ),
            # The server's own handler deadline is fixed when it starts.
            "lifecycle": new.lifecycle.model_copy(
                update={"shutdown_timeout_seconds": old.lifecycle.shutdown_timeout_seconds}
            ),
            "envelope": new.envelope.model_copy(update={"machine_id": old.envelope.machine_id}),
            "clients": old.clients,
            "tracing": old.tracing,
            "shadow": old.shadow,
            "log": old.log,
            "quarantine": old.quarantine,
        }
    )


def redact_url(value: str) -> str:
    """`value` with any user:password@ replaced by `***@` (for logs and `/config`)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or (parts.password is None and parts.username is None):
        return value
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if value is not None and _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str):
        return redact_url(value)
    return value


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data with URL credentials and secret-looking values hidden."""
    data: dict[str, Any] = _redact(settings.model_dump(mode="json"))
    return data


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


def check_config(path: Path) -> list[str]:
    """Every problem with a config file and the rules directory it names (empty when valid)."""
    from proxy.envelope import RulesError, load_rules

    try:
        settings = load_settings(path)
    except ConfigError as exc:
        return list(exc.problems)
    try:
        load_rules(settings.rules_dir) if settings.rules_dir else load_rules()
    except RulesError as exc:
        return [f"rules_dir {settings.rules_dir}: {line}" for line in str(exc).splitlines()]
    return []
