"""pytest fixtures: a real Kubernetes control plane on 127.0.0.1 (loaded with -p in pyproject)."""
