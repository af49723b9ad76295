"""The engine's front door: bytes in, detected shape and converted bytes out.

`Engine` binds a rules set and the conversion options; it holds no I/O and is safe to share
between threads and requests (its state is the event-id minter, which locks, and its plans,
which only grow, bounded: two threads may at worst compile one plan twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from proxy.envelope import validate
from proxy.envelope.convert import Conversion, convert_batch, convert_event, make_context
from proxy.envelope.detect import Detection, detect, explain
from proxy.envelope.errors import UnknownShape
from proxy.envelope.ids import SnowflakeMinter
from proxy.envelope.jsonbody import RawObject, refuse_repeated_keys, split_bounded, split_object
from proxy.envelope.plan import Plans
from proxy.envelope.rules import Rules, Shape


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Conversion settings; `None` means "as the rules' defaults say"."""

    normalise_status: bool | None = None
    mint: Literal["auto", "always", "never"] | None = None
    machine_id: int = 0
    max_depth: int = 64
    batch_max_items: int = 256
    now: Callable[[], datetime] | None = None  # a fixed clock for tests; None: the real one


class Engine:
    """Detects and converts NoETL event envelopes according to one rules set.

    Pass the process's one `minter` when engines are rebuilt (a config reload): a fresh
    minter would start its sequence again and could repeat ids minted in the same
    millisecond by the engine it replaces.
    """

    def __init__(
        self,
        rules: Rules,
        options: EngineOptions | None = None,
        *,
        minter: SnowflakeMinter | None = None,
    ):
        options = options or EngineOptions()
        if minter is not None and minter.machine_id != options.machine_id:
            raise ValueError("the minter's machine id differs from options.machine_id")
        self.rules = rules
        self.options = options
        defaults = rules.defaults
        self._context = make_context(
            rules,
            normalise_status=(
                defaults.normalise_status
                if options.normalise_status is None
                else options.normalise_status
            ),
            mint=defaults.mint if options.mint is None else options.mint,
            minter=minter or SnowflakeMinter(options.machine_id),
            batch_max_items=options.batch_max_items,
            now=options.now,
        )
        self.plans = Plans(rules, self._context)  # compiled per key layout; see plan.py

    def detect(self, body: bytes) -> Detection:
        """The shape of a body and the traits that matched."""
        return explain(split_object(body, self.options.max_depth), self.rules)

    def convert_event(self, body: bytes, target: str) -> Conversion:
        """Convert the body of a `POST /api/events` request to `target`."""
        members = split_bounded(body, self.options.max_depth)
        planned = self.plans.convert_event(body, members, target)
        if planned is not None:
            return planned
        return self.convert_event_generally(body, members, target)

    def convert_event_generally(self, body: bytes, members: RawObject, target: str) -> Conversion:
        """`convert_event` without plans: what decides every body a plan does not cover."""
        refuse_repeated_keys(body, members)
        shape = detect(members, self.rules)
        if shape.kind != "event":
            raise UnknownShape(
                f"this is a {shape.name} body; send it to /api/events/batch, not /api/events"
            )
        return convert_event(members, shape, self.rules.targets[target], self._context)

    def convert_batch(self, body: bytes, target: str) -> Conversion:
        """Convert the body of a `POST /api/events/batch` request to `target`."""
        members = split_bounded(body, self.options.max_depth)
        planned = self.plans.convert_batch(body, members, target)
        if planned is not None:
            return planned
        return self.convert_batch_generally(body, members, target)

    def convert_batch_generally(self, body: bytes, members: RawObject, target: str) -> Conversion:
        """`convert_batch` without plans: what decides every body a plan does not cover."""
        refuse_repeated_keys(body, members)
        shape = detect(members, self.rules)
        if shape.kind != "batch":
            raise UnknownShape(
                f"this is a single {shape.name} event; send it to /api/events, or wrap it"
                " in {execution_id, events: [...]}"
            )
        return convert_batch(members, shape, self.rules.targets[target], self._context)

    def convert(self, body: bytes, target: str) -> Conversion:
        """Convert a body of any shape, event or batch (what the CLI does)."""
        members, shape = self._detected(body)
        convert = convert_batch if shape.kind == "batch" else convert_event
        return convert(members, shape, self.rules.targets[target], self._context)

    def _detected(self, body: bytes) -> tuple[RawObject, Shape]:
        members = split_object(body, self.options.max_depth)
        return members, detect(members, self.rules)

    def validate_target(self, target: str, body: bytes, *, batch: bool = False) -> None:
        """Strictly check a body meant for `target`; raises the engine's errors."""
        validate.validate_target(target, body, batch=batch)
