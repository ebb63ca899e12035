"""Django's PostgreSQL backend, with a connection pool that lends without a round trip."""
