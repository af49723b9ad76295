"""envelope-proxy."""
