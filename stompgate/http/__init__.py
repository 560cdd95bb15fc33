"""HTTP endpoints on the same server: the publish API and health."""
