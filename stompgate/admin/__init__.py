"""The admin page, its API and the ``stompgate admin`` client (docs/admin.md)."""
