"""`envelope-proxy serve`: load the configuration (file < env < flags) and run the proxy."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, load_settings
from proxy.envelope import RulesError
from proxy.server.logs import configure_logging

# flag attribute -> setting it overrides
_FLAG_SETTINGS = {
    "listen": "listen",
    "admin_listen": "admin_listen",
    "upstream": "upstream.url",
    "upstream_version": "upstream.version",
    "probe_interval": "upstream.probe_interval_seconds",
    "rules": "rules_dir",
    "workers": "workers",
}


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        setting: getattr(args, flag)
        for flag, setting in _FLAG_SETTINGS.items()
        if getattr(args, flag, None) is not None
    }


def _serve(args: argparse.Namespace) -> int:
    from proxy.server.runner import serve

    config_file: Path | None = args.config
    load = functools.partial(load_settings, config_file, overrides_from(args))
    try:
        settings = load()
    except ConfigError as exc:
        print("envelope-proxy: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log)
    try:
        return serve(settings, config_file=config_file, reload_from=load)
    except RulesError as exc:
        print(f"envelope-proxy: invalid rules:\n{exc}", file=sys.stderr)
        return 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the proxy",
        description=(
            "Run the envelope proxy. Settings come from defaults < --config FILE < "
            "ENVELOPE_PROXY_* environment variables < these flags."
        ),
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML configuration file")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="proxy listener (default 0.0.0.0:8080)"
    )
    parser.add_argument(
        "--admin-listen", metavar="HOST:PORT", help="admin listener (default 0.0.0.0:9090)"
    )
    parser.add_argument("--upstream", metavar="URL", help="the NoETL control plane URL")
    parser.add_argument(
        "--upstream-version",
        metavar="auto|v1|v2|X.Y.Z",
        help="probe the upstream (auto), pin a target (v1, v2) or pin a release",
    )
    parser.add_argument(
        "--probe-interval", type=float, metavar="SECONDS", help="version probe interval"
    )
    parser.add_argument("--rules", type=Path, metavar="DIR", help="custom rules directory")
    parser.add_argument("--workers", type=int, metavar="N", help="processes sharing the port")
    parser.set_defaults(func=_serve)
