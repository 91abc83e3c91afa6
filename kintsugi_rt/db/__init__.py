"""PostgreSQL: the embedded server for zero-config runs, the pool, and the migration runner."""
