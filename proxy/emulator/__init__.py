"""The NoETL ingest emulator: a real control plane on loopback for the demo, tests and benchmarks.

It accepts and refuses exactly what a chosen NoETL server release does on
`POST /api/events` and `/api/events/batch` (answers and error formats included), reports
that release on `GET /api/health`, stores what it accepted, and can misbehave on cue.
"""

from __future__ import annotations

from proxy.emulator.app import create_emulator_app
from proxy.emulator.profiles import PROFILES, ProfileSpec

__all__ = ["PROFILES", "ProfileSpec", "create_emulator_app"]
