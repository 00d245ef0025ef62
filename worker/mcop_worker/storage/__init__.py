"""Storage shared by workers and the operator: connection settings, the PostgreSQL pool, the
results schema with the block store, and the writing half of the Redis progress bus."""
