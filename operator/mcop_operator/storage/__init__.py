"""The operator's side of storage: job rows and results, the reading half of the progress bus
with the result cache, and the PostgreSQL metrics queries."""
