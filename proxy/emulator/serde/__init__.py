"""The Rust control plane's request decoding: `serde_json` inside axum's `Json`, byte for byte.

It owns how the Rust releases read `POST /api/events` and `/api/events/batch`: the JSON
grammar and its refusals (`reader`), serde's error texts, paths and positions (`errors`),
how undeclared fields are skipped (`skip`), the request structs as data (`schema`), their
deserialization into values or the axum rejection the server sends (`structs`), and a
shortcut for ordinary bodies that provably decodes the same (`fast`). The Python releases
(FastAPI and pydantic) are modelled elsewhere in the emulator, in `python_models`.
"""
