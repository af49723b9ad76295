"""The shadow check: would this request also convert cleanly to the *other* target?

With `shadow: true`, after each event request the original body is converted to the target
the proxy is not using and the result is checked by the engine's strict target validator.
Nothing is sent anywhere: it answers "if we flipped `upstream.version` now, would this
producer's traffic still go through?" before anyone flips it. It runs in the request path,
so it does one conversion and one validation, and it never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from proxy.contract import EventRecord, Kind
from proxy.envelope import CANONICAL_TARGET, LEGACY_TARGET, Engine
from proxy.envelope.errors import EnvelopeError

log = logging.getLogger(__name__)

OTHER_TARGET = {CANONICAL_TARGET: LEGACY_TARGET, LEGACY_TARGET: CANONICAL_TARGET}
INTERNAL_ERROR = "internal_error"


class ShadowChecker:
    """Converts a request body to the other target with the current engine and validates it."""

    def __init__(self, engine_provider: Callable[[], Engine]) -> None:
        self._engine_provider = engine_provider
        self._internal_logged = False

    def check(self, record: EventRecord) -> tuple[str, str] | None:
        """(other target, `ok` or error code), or None when the request is not worth checking.

        Requests the proxy refused are skipped: the shadow conversion would refuse them for
        the same reason and only repeat the `rejected` count.
        """
        other = OTHER_TARGET.get(record.target)
        if other is None or record.shape is None or record.outcome == "rejected":
            return None
        return other, self.result(record.body, record.kind, other)

    def result(self, body: bytes, kind: Kind, target: str) -> str:
        """`ok` when `body` (sent to the `kind` endpoint) converts to `target` and validates,
        else the error code; also what observe mode reports for each target."""
        try:
            engine = self._engine_provider()
            batch = kind == "batch"
            if batch:
                converted = engine.convert_batch(body, target)
            else:
                converted = engine.convert_event(body, target)
            engine.validate_target(target, converted.body, batch=batch)
        except EnvelopeError as exc:
            return exc.code
        except Exception as exc:  # the check must never break the request path
            if not self._internal_logged:
                self._internal_logged = True
                # The type only: a message could quote the body.
                log.error("shadow check failed unexpectedly: %s (logged once)", type(exc).__name__)
            return INTERNAL_ERROR
        return "ok"
