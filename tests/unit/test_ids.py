"""Snowflake minting: the application layout, strictly increasing, safe across threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from proxy.envelope.ids import SNOWFLAKE_EPOCH_MS, SnowflakeMinter


def test_layout_is_ms_since_2024_machine_and_sequence() -> None:
    """An id packs (ms since 2024-01-01) << 22 | machine << 12 | sequence."""
    minter = SnowflakeMinter(513, clock_ms=lambda: SNOWFLAKE_EPOCH_MS + 1234)
    first, second = minter.next(), minter.next()
    assert first == (1234 << 22) | (513 << 12) | 0
    assert second == first + 1


def test_clock_going_back_never_repeats_or_decreases() -> None:
    """A clock that steps back keeps the last millisecond; ids keep increasing."""
    readings: Iterator[int] = iter([5000, 5000, 4000, 3000, 5001])
    minter = SnowflakeMinter(1, clock_ms=lambda: SNOWFLAKE_EPOCH_MS + next(readings))
    ids = [minter.next() for _ in range(5)]
    assert ids == sorted(set(ids))


def test_sequence_overflow_borrows_the_next_millisecond() -> None:
    """More than 4096 ids in one millisecond move on to the next one instead of wrapping."""
    minter = SnowflakeMinter(0, clock_ms=lambda: SNOWFLAKE_EPOCH_MS)
    ids = [minter.next() for _ in range(5000)]
    assert ids == sorted(set(ids))
    assert ids[-1] >> 22 == 1


def test_threads_get_unique_increasing_ids() -> None:
    """Ids minted from many threads at once are all distinct."""
    minter = SnowflakeMinter(3)
    minted: list[list[int]] = [[] for _ in range(8)]

    def work(bucket: list[int]) -> None:
        bucket.extend(minter.next() for _ in range(2000))

    threads = [threading.Thread(target=work, args=(bucket,)) for bucket in minted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for bucket in minted for i in bucket]
    assert len(set(everything)) == len(everything) == 16000
    assert all(bucket == sorted(bucket) for bucket in minted)


@pytest.mark.parametrize("machine", [-1, 1024])
def test_machine_id_must_fit_ten_bits(machine: int) -> None:
    """A machine id outside 0..1023 is refused."""
    with pytest.raises(ValueError, match="machine_id"):
        SnowflakeMinter(machine)


def test_engines_sharing_a_minter_never_repeat_an_id() -> None:
    """An engine rebuilt on reload with the process's minter continues its sequence."""
    from proxy.envelope import Engine, EngineOptions, load_rules

    rules = load_rules()
    minter = SnowflakeMinter(5, clock_ms=lambda: SNOWFLAKE_EPOCH_MS + 77)
    body = b'{"execution_id": 1, "step": "s", "name": "x"}'
    first = Engine(rules, EngineOptions(machine_id=5), minter=minter)
    second = Engine(rules, EngineOptions(machine_id=5), minter=minter)
    ids = [engine.convert_event(body, "executor_event").event_id for engine in (first, second)]
    assert ids[0] != ids[1]
    with pytest.raises(ValueError, match="machine id"):
        Engine(rules, EngineOptions(machine_id=6), minter=minter)
