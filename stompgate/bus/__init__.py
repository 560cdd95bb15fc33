"""Cross-node relay: in-memory (one node) and Redis (a cluster), presence, offline store."""
