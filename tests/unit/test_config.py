"""Settings: defaults, precedence of file < env < flags, validation messages, redaction."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from proxy.config import (
    ConfigError,
    Settings,
    check_config,
    keep_start_only,
    load_settings,
    redact_url,
    redacted,
    resolve_machine_id,
    restart_needed,
    split_host_port,
)
from tests.samples import REPO_ROOT


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(config_file: Path | None, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file, **kwargs)  # type: ignore[arg-type]
    return "\n".join(caught.value.problems)


def test_defaults_match_the_documented_schema() -> None:
    """With nothing given, every setting has the value the configuration reference documents."""
    settings = load_settings(None, environ={})
    assert settings.listen == "0.0.0.0:8080"
    assert settings.admin_listen == "0.0.0.0:9090"
    assert settings.rules_dir is None
    assert settings.workers == 1
    assert settings.upstream.url == "http://127.0.0.1:8082"
    assert settings.upstream.version == "auto"
    assert settings.upstream.probe_interval_seconds == 30
    assert settings.upstream.connect_timeout_seconds == 2
    assert settings.upstream.timeout_seconds == 25
    assert settings.upstream.pool_size == 100
    assert settings.limits.max_body_bytes == 2_097_152
    assert settings.limits.max_json_depth == 64
    assert settings.limits.batch_max_items == 256
    assert settings.limits.max_inflight == 1024
    assert settings.limits.max_inflight_bytes == 64 * 1024 * 1024
    assert settings.limits.body_read_timeout_seconds == 10
    assert settings.limits.keepalive_timeout_seconds == 15
    assert settings.envelope.normalise_status is True
    assert settings.envelope.mint == "auto"
    assert settings.envelope.machine_id == 0
    assert settings.lifecycle.drain_seconds == 5
    assert settings.lifecycle.shutdown_timeout_seconds == 20
    assert settings.clients.sources == ("header:X-NoETL-Client", "worker_id", "user_agent", "peer")
    assert settings.clients.max_clients == 500
    assert settings.clients.state_file is None
    assert settings.clients.sunset_window_seconds == 86400
    assert settings.shadow is False
    assert settings.tracing.otlp_endpoint is None
    assert settings.tracing.service_name == "envelope-proxy"


def test_file_then_env_then_flags_win_in_that_order(tmp_path: Path) -> None:
    """A setting given by file, env and flag takes the flag; file and env fill the rest."""
    config = write(
        tmp_path,
        "upstream:\n  url: http://file:1\n  version: v1\n  pool_size: 7\nshadow: true\n",
    )
    environ = {
        "ENVELOPE_PROXY_UPSTREAM__URL": "http://env:2",
        "ENVELOPE_PROXY_UPSTREAM__VERSION": "v2",
    }
    settings = load_settings(config, {"upstream.url": "http://flag:3"}, environ=environ)
    assert settings.upstream.url == "http://flag:3"
    assert settings.upstream.version == "v2"
    assert settings.upstream.pool_size == 7
    assert settings.shadow is True


def test_env_values_are_parsed_nested_and_lists_as_json() -> None:
    """`__` nests env variables, numbers and booleans parse, a list is given as JSON."""
    settings = load_settings(
        None,
        environ={
            "ENVELOPE_PROXY_LIMITS__MAX_INFLIGHT": "12",
            "ENVELOPE_PROXY_SHADOW": "true",
            "ENVELOPE_PROXY_CLIENTS__SOURCES": '["header:X-Team", "peer"]',
            "ENVELOPE_PROXY_NO_UVLOOP": "1",
        },
    )
    assert settings.limits.max_inflight == 12
    assert settings.shadow is True
    assert settings.clients.sources == ("header:X-Team", "peer")


def test_process_environment_is_not_read_when_a_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`environ=` replaces os.environ entirely (tests and reloads see only what they pass)."""
    monkeypatch.setenv("ENVELOPE_PROXY_WORKERS", "9")
    assert load_settings(None, environ={}).workers == 1
    assert load_settings(None).workers == 9


@pytest.mark.parametrize("version", ["auto", "v1", "v2", "2.9.0", "3.83.1"])
def test_upstream_version_accepts_modes_and_releases(version: str) -> None:
    """`upstream.version` takes auto, v1, v2 or an X.Y.Z release."""
    settings = load_settings(None, {"upstream.version": version}, environ={})
    assert settings.upstream.version == version


def test_unquoted_release_in_yaml_asks_for_quotes(tmp_path: Path) -> None:
    """YAML reads `2.9` as a float; the error names the setting, the file and the fix."""
    config = write(tmp_path, "upstream:\n  version: 2.9\n")
    message = problems_of(config, environ={})
    assert "upstream.version" in message
    assert "quoted string" in message
    assert str(config) in message


@pytest.mark.parametrize("bad", ["latest", "2.9", "v3", "2.9.0-rc1", ""])
def test_upstream_version_rejects_anything_else(bad: str) -> None:
    """Any other version string is refused with the accepted forms in the message."""
    message = problems_of(None, overrides={"upstream.version": bad}, environ={})
    assert message.startswith("upstream.version: must be auto, v1, v2 or a release X.Y.Z")
    assert "[from command line]" in message


def test_unknown_keys_are_errors_in_file_and_env(tmp_path: Path) -> None:
    """A misspelt key in the file or under a known env section fails, naming where it came from."""
    config = write(tmp_path, "upstrem:\n  url: http://x:1\n")
    message = problems_of(config, environ={"ENVELOPE_PROXY_LIMITS__MAX_BODY": "5"})
    assert f"upstrem: unknown setting [from config file {config}]" in message
    assert (
        "limits.max_body: unknown setting [from environment ENVELOPE_PROXY_LIMITS__MAX_BODY]"
        in message
    )


def test_every_problem_is_reported_at_once() -> None:
    """Several invalid values give one line each, naming the setting and what is wrong."""
    message = problems_of(
        None,
        overrides={
            "listen": "8080",
            "envelope.machine_id": 1024,
            "upstream.url": "ftp://host",
            "limits.max_inflight": 0,
            "envelope.mint": "sometimes",
        },
        environ={},
    )
    lines = message.splitlines()
    assert len(lines) == 5
    assert any(line.startswith("listen: must be HOST:PORT") for line in lines)
    assert any(
        line.startswith("envelope.machine_id: must be auto or an integer 0..1023 (got 1024)")
        for line in lines
    )
    assert any(
        line.startswith("upstream.url: must be an http:// or https:// URL") for line in lines
    )
    assert any(line.startswith("limits.max_inflight: Input should be greater") for line in lines)
    assert any(line.startswith("envelope.mint: Input should be 'auto'") for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("- listen\n", "the top level must be a mapping"),
        ("listen: [\n", "invalid YAML"),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    """Duplicate keys (which PyYAML would silently merge), non-mappings and bad YAML fail."""
    assert expected in problems_of(write(tmp_path, text), environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not a traceback."""
    message = problems_of(tmp_path / "absent.yaml", environ={})
    assert "cannot read it" in message


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    """An empty YAML file is a valid configuration of defaults."""
    assert load_settings(write(tmp_path, ""), environ={}) == Settings()


def test_host_port_forms() -> None:
    """HOST:PORT parses IPv4, names and bracketed IPv6; malformed forms are refused."""
    assert split_host_port("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert split_host_port("localhost:0") == ("localhost", 0)
    assert split_host_port("[::1]:9090") == ("::1", 9090)
    for bad in ("8080", ":80", "host:", "::1:80", "host:70000", "host:port"):
        with pytest.raises(ValueError, match=r"must be|port"):
            split_host_port(bad)


def test_redacted_hides_credentials_and_secret_looking_values() -> None:
    """/config shows URLs without user:password and never a secret-looking value."""
    settings = load_settings(
        None, {"tracing.otlp_endpoint": "http://user:hunter2@collector:4318"}, environ={}
    )
    shown = redacted(settings)
    assert shown["tracing"]["otlp_endpoint"] == "http://***@collector:4318"
    assert "hunter2" not in repr(shown)
    assert redact_url("https://admin:pw@[::1]:8082/base") == "https://***@[::1]:8082/base"
    assert redact_url("http://noetl:8082") == "http://noetl:8082"
    assert shown["listen"] == "0.0.0.0:8080"
    assert shown["clients"]["sources"] == [
        "header:X-NoETL-Client",
        "worker_id",
        "user_agent",
        "peer",
    ]


def test_restart_only_settings_are_reported_and_kept() -> None:
    """A reload keeps listen addresses, workers and pool size, and says they changed."""
    old = load_settings(None, environ={})
    new = load_settings(
        None,
        {
            "listen": "127.0.0.1:1",
            "workers": 2,
            "upstream.pool_size": 3,
            "upstream.url": "http://b:1",
            "limits.keepalive_timeout_seconds": 5,
            "limits.max_inflight": 7,
            "lifecycle.shutdown_timeout_seconds": 3,
            "lifecycle.drain_seconds": 1,
            "envelope.machine_id": 9,
            "envelope.mint": "never",
        },
        environ={},
    )
    assert restart_needed(old, new) == [
        "listen",
        "workers",
        "upstream.pool_size",
        "limits.keepalive_timeout_seconds",
        "lifecycle.shutdown_timeout_seconds",
        "envelope.machine_id",
    ]
    applied = keep_start_only(old, new)
    assert applied.listen == old.listen
    assert applied.workers == old.workers
    assert applied.upstream.pool_size == old.upstream.pool_size
    assert applied.limits.keepalive_timeout_seconds == old.limits.keepalive_timeout_seconds
    assert applied.envelope.machine_id == old.envelope.machine_id
    assert applied.lifecycle.shutdown_timeout_seconds == old.lifecycle.shutdown_timeout_seconds
    assert applied.lifecycle.drain_seconds == 1
    assert applied.upstream.url == "http://b:1"
    assert applied.limits.max_inflight == 7
    assert applied.envelope.mint == "never"
    assert restart_needed(old, applied) == []


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    """`check` finds nothing wrong with a valid file using the built-in rules."""
    config = write(tmp_path, "upstream:\n  url: http://noetl:8082\n  version: '2.9.0'\n")
    assert check_config(config) == []


def test_check_config_reports_config_and_rules_problems(tmp_path: Path) -> None:
    """`check` lists config problems, and problems of the rules directory the file names."""
    bad_config = write(tmp_path, "workers: 0\n")
    assert check_config(bad_config)[0].startswith("workers: Input should be greater")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "shapes.yaml").write_text("shapes: nope\n", encoding="utf-8")
    config = write(tmp_path, f"rules_dir: {rules}\n", name="with-rules.yaml")
    problems = check_config(config)
    assert problems
    assert all(line.startswith(f"rules_dir {rules}: ") for line in problems)


@pytest.mark.parametrize(
    "url", ["http://ops:hunter2@noetl:8082", "https://token@noetl:8082", "http://@noetl:8082"]
)
def test_credentials_in_the_upstream_url_are_refused(url: str) -> None:
    """user:password@ in upstream.url is a configuration error that says why."""
    message = problems_of(None, overrides={"upstream.url": url}, environ={})
    assert message.startswith("upstream.url: must not carry credentials (user:password@)")
    assert "hunter2" not in message  # the refusal does not repeat the secret


@pytest.mark.parametrize(
    ("given", "expected"),
    [("auto", "auto"), (0, 0), (1023, 1023), ("17", 17)],
)
def test_machine_id_is_auto_or_ten_bits(given: object, expected: object) -> None:
    """envelope.machine_id takes `auto` or 0..1023 (also as an environment string)."""
    settings = load_settings(None, {"envelope.machine_id": given}, environ={})
    assert settings.envelope.machine_id == expected
    from_env = load_settings(None, environ={"ENVELOPE_PROXY_ENVELOPE__MACHINE_ID": str(given)})
    assert from_env.envelope.machine_id == expected


@pytest.mark.parametrize("bad", [-1, 1024, True, "Auto", "", 1.5])
def test_machine_id_refuses_anything_else(bad: object) -> None:
    """Anything but `auto` or an integer 0..1023 is one clear problem line."""
    message = problems_of(None, overrides={"envelope.machine_id": bad}, environ={})
    assert message == (
        f"envelope.machine_id: must be auto or an integer 0..1023 (got {bad!r}) [from command line]"
    )


def test_auto_machine_id_is_a_stable_hash_of_the_host_name() -> None:
    """`auto` gives the same id for the same host name, spreads names over 0..1023, and
    defaults to this machine's host name; an explicit id is used as given."""
    assert resolve_machine_id("auto", "noetl-server-7d9f-abcde") == resolve_machine_id(
        "auto", "noetl-server-7d9f-abcde"
    )
    ids = {resolve_machine_id("auto", f"noetl-server-7d9f-{n:05d}") for n in range(200)}
    assert ids <= set(range(1024))
    assert len(ids) > 150  # 200 names into 1024 slots: a handful of collisions at most
    assert resolve_machine_id("auto") == resolve_machine_id("auto", socket.gethostname())
    assert resolve_machine_id(42, "ignored") == 42


def test_inflight_bytes_must_hold_one_largest_body() -> None:
    """limits.max_inflight_bytes below limits.max_body_bytes could never admit a full body."""
    message = problems_of(
        None,
        overrides={"limits.max_body_bytes": 2048, "limits.max_inflight_bytes": 1024},
        environ={},
    )
    assert message.startswith("limits: max_inflight_bytes (1024) must be at least max_body_bytes")
    fits = load_settings(
        None, {"limits.max_body_bytes": 2048, "limits.max_inflight_bytes": 2048}, environ={}
    )
    assert fits.limits.max_inflight_bytes == 2048


def test_per_peer_budgets_default_to_half_and_must_hold_one_largest_body() -> None:
    """One address may use half of the in-flight requests and bytes unless configured; an
    explicit byte share below max_body_bytes could never admit a full body."""
    limits = load_settings(None, {}, environ={}).limits
    assert (limits.peer_requests, limits.peer_bytes) == (512, 32 * 1024 * 1024)
    assert limits.max_passthrough_body_bytes is None
    small = load_settings(
        None,
        {
            "limits.max_body_bytes": 4096,
            "limits.max_inflight_bytes": 6000,
            "limits.max_inflight": 1,
        },
        environ={},
    ).limits
    assert (small.peer_requests, small.peer_bytes) == (1, 4096)
    message = problems_of(
        None,
        overrides={"limits.max_body_bytes": 2048, "limits.max_inflight_bytes_per_peer": 1024},
        environ={},
    )
    assert message.startswith(
        "limits: max_inflight_bytes_per_peer (1024) must be at least max_body_bytes"
    )


def test_documented_configuration_reference_is_the_defaults(tmp_path: Path) -> None:
    """The YAML block of docs/configuration.md's reference loads, and is every default."""
    page = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = page.split("## Every setting, with its default", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    assert load_settings(write(tmp_path, block.group(1)), environ={}) == Settings()


def test_two_header_sources_are_refused() -> None:
    """Only one identity header is read per request, so a second one is an error, not ignored."""
    problems = problems_of(
        None,
        overrides={"clients.sources": ["header:X-Team", "header:X-NoETL-Client", "peer"]},
        environ={},
    )
    assert "sources may name one header only" in problems
    assert "header:X-Team, header:X-NoETL-Client" in problems


def test_an_empty_state_file_means_no_state_file() -> None:
    """`state_file: ""` (how Helm values and env vars say "off") is off, not the directory '.'."""
    settings = load_settings(None, environ={"ENVELOPE_PROXY_CLIENTS__STATE_FILE": ""})
    assert settings.clients.state_file is None
    settings = load_settings(None, {"clients.state_file": ""}, environ={})
    assert settings.clients.state_file is None


def test_an_env_value_that_is_not_json_names_the_variable() -> None:
    """A list given without JSON in an env var is reported by variable name, with an example."""
    problems = problems_of(
        None,
        environ={
            "ENVELOPE_PROXY_CLIENTS__SOURCES": "header:X-Team",
            "ENVELOPE_PROXY_CLIENTS__MAX_CLIENTS": "5",
        },
    )
    assert "ENVELOPE_PROXY_CLIENTS__SOURCES='header:X-Team': not valid JSON" in problems
    assert "MAX_CLIENTS" not in problems
    assert "_EnvSource" not in problems


@pytest.mark.parametrize(
    ("listen", "admin"),
    [
        ("0.0.0.0:8080", "0.0.0.0:8080"),
        ("127.0.0.1:8080", "0.0.0.0:8080"),
        ("[::]:9090", "127.0.0.1:9090"),
    ],
)
def test_admin_listen_on_the_proxy_port_is_refused(listen: str, admin: str) -> None:
    """Two listeners on one port would fail at bind; validation names the clash instead."""
    problems = problems_of(None, overrides={"listen": listen, "admin_listen": admin}, environ={})
    assert problems.startswith(
        f"admin_listen: must not be the proxy's own address (listen is {listen})"
    )
    assert "[from command line]" in problems


@pytest.mark.parametrize(
    ("listen", "admin"),
    [
        ("127.0.0.1:8080", "127.0.0.2:8080"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("0.0.0.0:8080", "0.0.0.0:8081"),
    ],
)
def test_listeners_on_distinct_sockets_pass(listen: str, admin: str) -> None:
    """Different hosts (neither a wildcard), port 0 or different ports do not clash."""
    settings = load_settings(None, {"listen": listen, "admin_listen": admin}, environ={})
    assert (settings.listen, settings.admin_listen) == (listen, admin)


def test_mode_and_quarantine_come_from_the_environment_and_are_checked() -> None:
    """ENVELOPE_PROXY_MODE and ENVELOPE_PROXY_QUARANTINE__*; a quarantine needs its dir;
    mode is reloaded live, quarantine only at start."""
    env = {
        "ENVELOPE_PROXY_MODE": "observe",
        "ENVELOPE_PROXY_QUARANTINE__ENABLED": "true",
        "ENVELOPE_PROXY_QUARANTINE__DIR": "/var/lib/envelope-proxy/quarantine",
        "ENVELOPE_PROXY_QUARANTINE__MAX_BYTES": "1048576",
    }
    settings = load_settings(None, environ=env)
    assert settings.mode == "observe"
    assert settings.quarantine.max_bytes == 1 << 20
    assert str(settings.quarantine.dir) == "/var/lib/envelope-proxy/quarantine"
    problems = problems_of(None, environ={"ENVELOPE_PROXY_QUARANTINE__ENABLED": "true"})
    assert "quarantine: dir must be set when the quarantine is enabled" in problems
    assert "mode" in problems_of(None, environ={"ENVELOPE_PROXY_MODE": "shadow"})
    changed = settings.model_copy(update={"mode": "enforce", "quarantine": Settings().quarantine})
    assert restart_needed(settings, changed) == ["quarantine"]
    assert keep_start_only(settings, changed).mode == "enforce"
    assert keep_start_only(settings, changed).quarantine == settings.quarantine


def test_log_levels_name_loggers_in_file_and_env(tmp_path: Path) -> None:
    """`log.levels` maps logger names to levels (any case); env gives it as JSON."""
    assert load_settings(None, environ={}).log.levels == {}
    config = write(
        tmp_path, "log:\n  levels:\n    proxy: DEBUG\n    proxy.server.access_log: warning\n"
    )
    assert load_settings(config, environ={}).log.levels == {
        "proxy": "debug",
        "proxy.server.access_log": "warning",
    }
    env = {"ENVELOPE_PROXY_LOG__LEVELS": '{"proxy.server.reload": "debug"}'}
    assert load_settings(config, environ=env).log.levels == {
        "proxy": "debug",
        "proxy.server.access_log": "warning",
        "proxy.server.reload": "debug",
    }


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ('{"proxy": "loud"}', "log.levels.proxy: Input should be 'debug', 'info', 'warning'"),
        ('{"proxy..server": "info"}', "must be a logger name such as proxy.server.reload"),
        ('{"": "info"}', "must be a logger name"),
        ('{"proxy": "info", "proxy server": "info"}', "(got 'proxy server')"),
    ],
)
def test_log_levels_refuse_unknown_levels_and_malformed_names(levels: str, expected: str) -> None:
    problems = problems_of(None, environ={"ENVELOPE_PROXY_LOG__LEVELS": levels})
    assert expected in problems
