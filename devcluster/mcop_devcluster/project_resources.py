"""Cluster objects the project expects besides its CRDs: the chart's PriorityClasses and the
Secrets a PerfTuning points at (names from the product spec)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mcop_devcluster.rest import ApiError, JsonObject, RestClient

REPO = Path(__file__).resolve().parents[2]
PRIORITY_CLASSES_FILE = REPO / "charts" / "montecarlo-operator" / "files" / "priorityclasses.yaml"
REDIS_SECRET = ("montecarlo-redis", "url")
POSTGRES_SECRET = ("montecarlo-postgres", "dsn")


def priority_classes(path: Path = PRIORITY_CLASSES_FILE) -> list[JsonObject]:
    """The chart's PriorityClasses (montecarlo-low/normal/high/critical), one source of truth."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the chart's PriorityClasses live there")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def install_priority_classes(rest: RestClient) -> list[str]:
    """Creates the chart's PriorityClasses (those that exist are left as they are); their names."""
    names = []
    for manifest in priority_classes():
        try:
            rest.create("/apis/scheduling.k8s.io/v1/priorityclasses", manifest)
        except ApiError as error:
            if error.status != 409:
                raise
        names.append(str(manifest["metadata"]["name"]))
    return names


def create_connection_secrets(
    rest: RestClient, namespace: str, *, redis_url: str, postgres_dsn: str
) -> None:
    """Secrets montecarlo-redis (key url) and montecarlo-postgres (key dsn) for a PerfTuning."""
    for (name, key), value in ((REDIS_SECRET, redis_url), (POSTGRES_SECRET, postgres_dsn)):
        rest.create(
            f"/api/v1/namespaces/{namespace}/secrets",
            {"metadata": {"name": name}, "type": "Opaque", "stringData": {key: value}},
        )


# The project's kinds whose objects carry the operator's finalizer.
FINALIZED_COLLECTIONS = (
    "/apis/montecarlo.io/v1alpha1/namespaces/{namespace}/montecarlojobs",
    "/apis/montecarlo.io/v1alpha1/namespaces/{namespace}/perftunings",
)


def release_finalizers(rest: RestClient, namespace: str) -> list[str]:
    """Drops the finalizers of the namespace's MonteCarloJobs and PerfTunings; what it released.

    For test namespaces whose operator is already gone: nothing would remove the finalizer, the
    namespace would stay Terminating for good, and the controller-manager's namespace controller
    would retry it about twice a second (a list and a delete of every resource type each time),
    keeping the API server and etcd busy for the rest of the session."""
    released = []
    for template in FINALIZED_COLLECTIONS:
        collection = template.format(namespace=namespace)
        try:
            items = rest.get(collection)["items"]
        except ApiError as error:
            if error.status == 404:  # CRDs not installed
                continue
            raise
        for item in items:
            if not item["metadata"].get("finalizers"):
                continue
            name = item["metadata"]["name"]
            try:
                rest.patch(
                    f"{collection}/{name}", {"metadata": {"finalizers": None}}, merge="merge"
                )
            except ApiError as error:
                if error.status != 404:  # gone meanwhile
                    raise
            released.append(f"{collection.rsplit('/', 1)[1]}/{name}")
    return released
