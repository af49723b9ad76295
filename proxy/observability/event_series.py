"""The per-event metric families, counted in plain Python and turned into samples at scrape.

Every event request touches six series (its count, its client's last-seen time and ledger
count, two duration histograms and, for a batch, its item count). prometheus_client's
metric objects take a lock and check their type on every update, which made counting an
event cost more than detecting its shape; here an update is a few attribute additions on
objects found with one dict lookup. `EventFamilies` is a registry collector: a scrape
(which runs in a thread) only reads these numbers, and the samples it yields are the ones
prometheus_client's own Counter, Gauge and Histogram would give (names, `_created`,
buckets), in both exposition formats.

Label sets are bounded by the caller (capped client label, shape names, two targets, fixed
outcomes), as for every family of the proxy.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

EVENTS = "envelope_proxy_events"
LAST_SEEN = "envelope_proxy_client_last_seen_timestamp_seconds"
LEDGER_EVENTS = "envelope_proxy_ledger_events"
UPSTREAM_DURATION = "envelope_proxy_upstream_request_duration_seconds"
REQUEST_DURATION = "envelope_proxy_event_request_duration_seconds"
BATCH_ITEMS = "envelope_proxy_batch_items"

_HELP = {
    EVENTS: "Event requests by client, detected shape, target and outcome.",
    LAST_SEEN: "Unix time of the last event of this shape from this client.",
    LEDGER_EVENTS: "Events of this shape from this client in the sunset ledger (kept across "
    "restarts with clients.state_file).",
    UPSTREAM_DURATION: "Duration of upstream exchanges for event requests.",
    REQUEST_DURATION: "Whole event requests, from the handler's start to the answer (the "
    "proxy's own time included), by target and outcome.",
    BATCH_ITEMS: "Events inside batch requests, by target and outcome of the batch.",
}


class _Client:
    """One client and shape: when it was last seen and how many events the ledger holds."""

    __slots__ = ("count", "last_seen")

    def __init__(self) -> None:
        self.last_seen = 0.0
        self.count = 0


class _Histogram:
    __slots__ = ("buckets", "created", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0
        self.created = 0.0  # set at the first observation, as prometheus_client's series

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        if not self.created:
            self.created = time.time()
        self.buckets[bisect_left(bounds, value)] += 1
        self.sum += value


class _Outcome:
    """One target and outcome: the two duration histograms and the batch item count."""

    __slots__ = ("batch_items", "batch_items_created", "request", "upstream")

    def __init__(self, size: int) -> None:
        self.upstream = _Histogram(size)
        self.request = _Histogram(size)
        self.batch_items = 0
        self.batch_items_created: float | None = None  # the series exists after a batch


class _Series:
    """One client, shape, target and outcome, with the series it updates alongside."""

    __slots__ = ("client", "count", "created", "outcome")

    def __init__(self, client: _Client, outcome: _Outcome) -> None:
        self.count = 0
        self.created = time.time()
        self.client = client
        self.outcome = outcome


class EventFamilies(Collector):
    """The six per-event families; `observe` is called on the event loop, `collect` by a
    scrape in any thread."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        if not buckets or buckets != tuple(sorted(buckets)) or buckets[-1] == float("inf"):
            raise ValueError("buckets: finite upper bounds in increasing order (+Inf is added)")
        self._bounds = buckets
        self._les = [floatToGoString(b) for b in buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._clients: dict[tuple[str, str], _Client] = {}
        self._outcomes: dict[tuple[str, str], _Outcome] = {}

    def observe(
        self,
        client: str,
        shape: str,
        target: str,
        outcome: str,
        now: float,
        upstream_seconds: float | None,
        request_seconds: float | None,
        batch_size: int | None,
    ) -> None:
        key = (client, shape, target, outcome)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(
                self._client(client, shape), self._outcome(target, outcome)
            )
        series.count += 1
        seen = series.client
        seen.last_seen = now
        seen.count += 1
        outcomes = series.outcome
        if upstream_seconds is not None:
            outcomes.upstream.observe(self._bounds, upstream_seconds)
        if request_seconds is not None:
            outcomes.request.observe(self._bounds, request_seconds)
        if batch_size is not None:
            if outcomes.batch_items_created is None:
                outcomes.batch_items_created = time.time()
            outcomes.batch_items += batch_size

    def seed(self, seen: Iterable[tuple[str, str, int, float]]) -> None:
        """A loaded ledger's (client, shape, count, last seen), so its gauges go on."""
        for client, shape, count, last_seen in seen:
            entry = self._client(client, shape)
            entry.count, entry.last_seen = count, last_seen

    def _client(self, client: str, shape: str) -> _Client:
        entry = self._clients.get((client, shape))
        if entry is None:
            entry = self._clients[(client, shape)] = _Client()
        return entry

    def _outcome(self, target: str, outcome: str) -> _Outcome:
        entry = self._outcomes.get((target, outcome))
        if entry is None:
            entry = self._outcomes[(target, outcome)] = _Outcome(len(self._bounds) + 1)
        return entry

    # -- a scrape --------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return list(self._families(empty=True))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(empty=False))

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        # dict.copy(): one C-level copy that no Python code can interrupt (a list of the
        # items allocates per item, and a collection could let the loop add a series).
        series = {} if empty else self._series.copy()
        clients = {} if empty else self._clients.copy()
        outcomes = {} if empty else self._outcomes.copy()
        # PROMETHEUS_DISABLE_CREATED_SERIES, as prometheus_client's own families honour it.
        created = prometheus_metrics._use_created

        events = Metric(EVENTS, _HELP[EVENTS], "counter")
        for (client, shape, target, outcome), one in series.items():
            labels = {"client": client, "shape": shape, "target": target, "outcome": outcome}
            events.add_sample(EVENTS + "_total", labels, float(one.count))
            if created:
                events.add_sample(EVENTS + "_created", labels, one.created)
        yield events

        last_seen = Metric(LAST_SEEN, _HELP[LAST_SEEN], "gauge")
        ledger = Metric(LEDGER_EVENTS, _HELP[LEDGER_EVENTS], "gauge")
        for (client, shape), entry in clients.items():
            labels = {"client": client, "shape": shape}
            last_seen.add_sample(LAST_SEEN, labels, entry.last_seen)
            ledger.add_sample(LEDGER_EVENTS, labels, float(entry.count))
        yield last_seen
        yield ledger

        upstream = Metric(UPSTREAM_DURATION, _HELP[UPSTREAM_DURATION], "histogram")
        request = Metric(REQUEST_DURATION, _HELP[REQUEST_DURATION], "histogram")
        items = Metric(BATCH_ITEMS, _HELP[BATCH_ITEMS], "counter")
        for (target, outcome), by_outcome in outcomes.items():
            labels = {"target": target, "outcome": outcome}
            self._histogram(upstream, labels, by_outcome.upstream, created)
            self._histogram(request, labels, by_outcome.request, created)
            items_created = by_outcome.batch_items_created
            if items_created is not None:
                items.add_sample(BATCH_ITEMS + "_total", labels, float(by_outcome.batch_items))
                if created:
                    items.add_sample(BATCH_ITEMS + "_created", labels, items_created)
        yield upstream
        yield request
        yield items

    def _histogram(
        self, family: Metric, labels: dict[str, str], histogram: _Histogram, created: bool
    ) -> None:
        counts = list(histogram.buckets)
        total = sum(counts)
        if not total:
            return  # a series appears with its first observation, as prometheus_client's
        name = family.name
        cumulative = 0
        for le, count in zip(self._les, counts, strict=True):
            cumulative += count
            family.add_sample(name + "_bucket", {**labels, "le": le}, float(cumulative))
        family.add_sample(name + "_count", labels, float(total))
        family.add_sample(name + "_sum", labels, histogram.sum)
        if created:
            family.add_sample(name + "_created", labels, histogram.created)
