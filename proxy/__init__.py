"""envelope-proxy: a migration sidecar that rewrites NoETL event envelopes for the upstream."""

__version__ = "0.1.0"
