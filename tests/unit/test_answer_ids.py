"""The event ids an upstream reports in its answer, read exactly (`exchange.event_ids`)."""

from __future__ import annotations

import pytest

from proxy.server.exchange import event_ids


@pytest.mark.parametrize(
    ("body", "ids"),
    [
        (b'{"status":"ok","event_id":"371818175291621376"}', ("371818175291621376",)),
        (b'{"event_id":9223372036854775807}', ("9223372036854775807",)),
        (b'{"event_id":-5}', ("-5",)),
        (b'{"event_ids":[1,"2",true,null,"x",3.5,"-4"]}', ("1", "2", "-4")),
        (b'{"event_ids":"1","event_id":7}', ("7",)),
        (b'{"event_id":true}', ()),
        (b'{"event_id":"12a"}', ()),
        (b'{"status":"ok"}', ()),
        (b"[1,2]", ()),
        (b"not json", ()),
        (b"", ()),
    ],
)
def test_answer_ids_are_exact_decimal_strings(body: bytes, ids: tuple[str, ...]) -> None:
    assert event_ids(body) == ids
