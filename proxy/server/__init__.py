"""The aiohttp reverse proxy: event rewriting, pass-through, admin listener, lifecycle."""
