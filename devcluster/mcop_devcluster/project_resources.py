"""Cluster objects the project expects to exist besides its CRDs: the PriorityClasses the chart
installs and the Secrets a PerfTuning points at (names from the product spec)."""

from __future__ import annotations

from mcop_devcluster.rest import ApiError, JsonObject, RestClient

# Values rise in this order (the spec asks only for the order; the chart should use the same).
PRIORITY_CLASSES = {
    "montecarlo-low": 1000,
    "montecarlo-normal": 2000,
    "montecarlo-high": 3000,
    "montecarlo-critical": 4000,
}
REDIS_SECRET = ("montecarlo-redis", "url")
POSTGRES_SECRET = ("montecarlo-postgres", "dsn")


def priority_classes() -> list[JsonObject]:
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "montecarlo-operator"},
            },
            "value": value,
            "globalDefault": False,
            "description": f"MonteCarloJob priority {name.removeprefix('montecarlo-')}",
        }
        for name, value in PRIORITY_CLASSES.items()
    ]


def install_priority_classes(rest: RestClient) -> None:
    """Creates the four PriorityClasses; those that exist already are left as they are."""
    for manifest in priority_classes():
        try:
            rest.create("/apis/scheduling.k8s.io/v1/priorityclasses", manifest)
        except ApiError as error:
            if error.status != 409:
                raise


def create_connection_secrets(
    rest: RestClient, namespace: str, *, redis_url: str, postgres_dsn: str
) -> None:
    """Secrets montecarlo-redis (key url) and montecarlo-postgres (key dsn) for a PerfTuning."""
    for (name, key), value in ((REDIS_SECRET, redis_url), (POSTGRES_SECRET, postgres_dsn)):
        rest.create(
            f"/api/v1/namespaces/{namespace}/secrets",
            {"metadata": {"name": name}, "type": "Opaque", "stringData": {key: value}},
        )
