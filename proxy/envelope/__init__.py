"""The envelope engine: detect a NoETL event envelope's shape and convert it to a target.

Pure: no aiohttp, no I/O. The CLI, the server and the tests share it.
"""

from proxy.envelope.convert import Conversion
from proxy.envelope.detect import Detection
from proxy.envelope.engine import Engine, EngineOptions
from proxy.envelope.errors import ERROR_CODES, EnvelopeError
from proxy.envelope.rule_files import RulesError
from proxy.envelope.rules import (
    CANONICAL_TARGET,
    LEGACY_TARGET,
    TARGETS,
    Rules,
    default_rules_dir,
    load_rules,
)

__all__ = [
    "CANONICAL_TARGET",
    "ERROR_CODES",
    "LEGACY_TARGET",
    "TARGETS",
    "Conversion",
    "Detection",
    "Engine",
    "EngineOptions",
    "EnvelopeError",
    "Rules",
    "RulesError",
    "default_rules_dir",
    "load_rules",
]
