"""Adapters that carry session bytes: aiohttp WebSocket and plain TCP."""
