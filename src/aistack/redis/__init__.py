"""Redis clients for cache, job delivery, pub/sub and locks: fail fast, lose only speed."""
