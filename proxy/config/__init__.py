"""The proxy's settings: one validated, immutable `Settings` from defaults, file, env and flags.

Precedence, lowest first: built-in defaults, the YAML file (`--config FILE`), environment
variables `ENVELOPE_PROXY_*` (nesting with `__`, e.g. `ENVELOPE_PROXY_UPSTREAM__URL`), then
command-line flags. Every model forbids unknown keys, so a typo fails at start (and at
reload) with a `ConfigError` naming the setting, where it came from and what is wrong.

`models` holds the sections, `loading` turns the layers into `Settings`, `restart` says what
a live reload may change, and `redaction` is what `/config` shows. `check_config()` is what
`envelope-proxy check` runs.
"""

from proxy.config.loading import (
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    ConfigError,
    check_config,
    load_settings,
)
from proxy.config.models import (
    AUTO_MACHINE_ID,
    MAX_MACHINE_ID,
    START_ONLY,
    ClientSource,
    ClientSourceKind,
    ClientSourceSpec,
    ClientsSettings,
    EnvelopeSettings,
    HostPort,
    HttpUrl,
    LifecycleSettings,
    LimitSettings,
    LoggerName,
    LogLevel,
    LogSettings,
    MachineId,
    Mode,
    NonNegativeSeconds,
    QuarantineSettings,
    Seconds,
    Settings,
    StartOnly,
    TracingSettings,
    UpstreamSettings,
    UpstreamUrl,
    UpstreamVersion,
    engine_options,
    parse_client_source,
    resolve_machine_id,
    split_host_port,
)
from proxy.config.redaction import redact_url, redacted
from proxy.config.restart import RESTART_ONLY, keep_start_only, restart_needed, start_only_fields

__all__ = [
    "AUTO_MACHINE_ID",
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "MAX_MACHINE_ID",
    "RESTART_ONLY",
    "START_ONLY",
    "ClientSource",
    "ClientSourceKind",
    "ClientSourceSpec",
    "ClientsSettings",
    "ConfigError",
    "EnvelopeSettings",
    "HostPort",
    "HttpUrl",
    "LifecycleSettings",
    "LimitSettings",
    "LogLevel",
    "LogSettings",
    "LoggerName",
    "MachineId",
    "Mode",
    "NonNegativeSeconds",
    "QuarantineSettings",
    "Seconds",
    "Settings",
    "StartOnly",
    "TracingSettings",
    "UpstreamSettings",
    "UpstreamUrl",
    "UpstreamVersion",
    "check_config",
    "engine_options",
    "keep_start_only",
    "load_settings",
    "parse_client_source",
    "redact_url",
    "redacted",
    "resolve_machine_id",
    "restart_needed",
    "split_host_port",
    "start_only_fields",
]
