"""A real Kubernetes control plane, PostgreSQL and Redis on 127.0.0.1 for tests and local use."""
