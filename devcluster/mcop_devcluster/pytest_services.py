"""pytest fixtures: real PostgreSQL and Redis servers on 127.0.0.1 (loaded with -p in pyproject)."""
