"""The quarantine: event bodies the proxy refused, kept byte-exact so they can be looked at,
checked against fixed rules and replayed.

`records` says what one quarantined record holds, `store` writes and reads the segment
files, `writer` feeds the store from the server without blocking its event loop, `admin`
serves `GET /rejections`, `journal` and `replay` send records again at most once, and
`commands` is `envelope-proxy quarantine`.
"""
