"""Pure parts of the operator: builders, priority mapping, admission order, conditions, status."""

from __future__ import annotations

from typing import Any

import pytest

from mcop_operator import admission, builders, conditions, job_status, naming, priority
from mcop_operator.tuning import tuning_from_spec


def _spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "shards": 4,
        "priority": "high",
        "priorityClassName": "",
        "timeoutSeconds": 600,
        "ttlSecondsAfterFinished": 120,
        "suspend": False,
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}},
    }
    spec.update(over)
    return spec


REF = builders.JobRef(name="spx-asian", namespace="quants", uid="1234-abcd")


def _job(**over: Any) -> dict[str, Any]:
    tuning = tuning_from_spec("default", None)
    return builders.build_worker_job(
        REF, _spec(**over), "sha256:00", tuning, "montecarlo-high", "img:1"
    )


def test_a_queue_name_hands_the_worker_job_to_kueue_suspended() -> None:
    job = _job(queueName="team-batch")
    assert job["metadata"]["labels"][naming.KUEUE_QUEUE_LABEL] == "team-batch"
    assert job["spec"]["suspend"] is True  # Kueue unsuspends it when it admits it
    pod = job["spec"]["template"]
    assert naming.KUEUE_QUEUE_LABEL not in pod["metadata"]["labels"]  # the Job's, not the pods'
    assert pod["spec"]["priorityClassName"] == "montecarlo-high"  # what Kueue reads
    assert naming.KUEUE_QUEUE_LABEL not in _job()["metadata"]["labels"]
    assert _job()["spec"]["suspend"] is False


def test_redis_mode_reaches_the_workers_and_replica_settings_are_typed() -> None:
    tuning = tuning_from_spec(
        "t",
        {
            "redis": {"mode": "cluster"},
            "postgres": {"readReplicaDsnSecretRef": {"name": "pg-ro", "key": "dsn"}},
        },
    )
    assert tuning.redis.pool.mode == "cluster"
    assert tuning.worker_env()["MCOP_REDIS_MODE"] == "cluster"
    assert tuning.postgres.replica_secret is not None
    assert (tuning.postgres.replica_secret.name, tuning.postgres.max_replica_lag_seconds) == (
        "pg-ro",
        10.0,
    )
    default = tuning_from_spec("default", None)
    assert default.redis.pool.mode == "standalone" and default.postgres.replica_secret is None


def test_worker_job_is_indexed_owned_and_labelled() -> None:
    job = _job()
    assert job["metadata"]["name"] == "spx-asian-workers"
    assert job["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "montecarlo-operator",
        "montecarlo.io/job": "spx-asian",
    }
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "MonteCarloJob",
        "1234-abcd",
        True,
    )
    s = job["spec"]
    assert (s["completionMode"], s["completions"], s["parallelism"]) == ("Indexed", 4, 4)
    assert s["activeDeadlineSeconds"] == 600
    assert s["ttlSecondsAfterFinished"] == 120
    pod = s["template"]["spec"]
    assert pod["priorityClassName"] == "montecarlo-high"
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "512Mi"}}


def test_worker_job_timeout_defaults_to_the_tuning() -> None:
    assert _job(timeoutSeconds=None)["spec"]["activeDeadlineSeconds"] == 3600


def test_worker_pods_meet_the_restricted_profile() -> None:
    pod = _job()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["readOnlyRootFilesystem"] is True


def test_credentials_only_by_secret_reference() -> None:
    env = _job()["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["MCOP_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "montecarlo-redis",
        "key": "url",
    }
    assert by_name["MCOP_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {
        "name": "montecarlo-postgres",
        "key": "dsn",
    }
    assert "value" not in by_name["MCOP_REDIS_URL"]
    assert by_name["MCOP_PG_POOL_SIZE"]["value"] == "20"


def test_long_names_leave_room_for_pod_suffixes() -> None:
    name = naming.worker_job_name("x" * 63)
    assert len(name) <= 52


def test_worker_job_names_never_collide() -> None:
    # Short names keep the plain form; names sharing their first 44 characters (the old cut)
    # get different Jobs; every name the CRD allows (52 characters) fits.
    assert naming.worker_job_name("euro") == "euro-workers"
    assert naming.worker_job_name("a" * 44) == "a" * 44 + "-workers"
    common = "desk-rates-eur-swaption-asian-barrier-nightly"  # 45 characters
    names = [naming.worker_job_name(common + suffix) for suffix in ("", "-a", "-b", "-1234567")]
    assert len(set(names)) == len(names), names
    assert all(len(n) <= naming.MAX_WORKER_JOB_NAME for n in names)
    assert all(n.endswith("-workers") and not n.startswith("-") for n in names)
    assert naming.worker_job_name(common) == naming.worker_job_name(common)  # deterministic


def test_errors_are_classified_transient_or_deterministic() -> None:
    import asyncpg
    import redis
    from kubernetes.client.exceptions import ApiException

    from mcop_operator import errors, metrics
    from mcop_operator.kube import Conflict

    transient = [
        ApiException(status=503),
        ApiException(status=429),
        Conflict("changed"),
        ConnectionRefusedError(),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError(),
        redis.exceptions.ConnectionError(),
    ]
    assert all(errors.is_transient(e) for e in transient)
    for deterministic in (ApiException(status=422), KeyError("spec"), ZeroDivisionError()):
        assert not errors.is_transient(deterministic)
    # Counted under the dependency that answered, in mcop_reconcile_errors_total{reason}.
    assert metrics.error_reason(Conflict("changed")) == "kubernetes"
    assert metrics.error_reason(errors.TryAgain("vanished")) == "kubernetes"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"priority": "low"}, "montecarlo-low"),
        ({"priority": "critical"}, "montecarlo-critical"),
        ({}, "montecarlo-normal"),
        ({"priority": "low", "priorityClassName": "batch-tier"}, "batch-tier"),
    ],
)
def test_priority_class_name(spec: dict[str, Any], expected: str) -> None:
    assert priority.priority_class_name(spec) == expected


def test_priority_ranks_rise() -> None:
    ranks = [priority.priority_rank({"priority": p}) for p in priority.PRIORITIES]
    assert ranks == sorted(ranks) and len(set(ranks)) == 4


def _entry(uid: str, rank: int, created: str, holds: bool = False) -> admission.QueueEntry:
    return admission.QueueEntry(
        uid=uid, name=uid, rank=rank, created=created, admitted=holds, suspended=False
    )


def test_admission_priority_then_age() -> None:
    entries = [
        _entry("old-low", 0, "2026-01-01T00:00:00Z"),
        _entry("new-high", 2, "2026-01-03T00:00:00Z"),
        _entry("mid-high", 2, "2026-01-02T00:00:00Z"),
        _entry("running", 1, "2025-12-31T00:00:00Z", holds=True),
    ]
    assert admission.may_start("mid-high", entries, limit=2) == (True, 1)
    assert admission.may_start("new-high", entries, limit=2) == (False, 2)
    assert admission.may_start("old-low", entries, limit=2) == (False, 3)
    assert admission.may_start("new-high", entries, limit=3) == (True, 2)


def test_admission_never_exceeds_the_limit() -> None:
    entries = [_entry(f"r{i}", 1, "2026", holds=True) for i in range(3)] + [_entry("w", 3, "2027")]
    assert admission.may_start("w", entries, limit=3) == (False, 1)


def test_a_waiting_job_is_told_who_is_ahead_and_why() -> None:
    entries = [_entry(f"r{i}", 1, "2025", holds=True) for i in range(10)] + [
        _entry("crit", 3, "2026-01-03"),
        _entry("high", 2, "2026-01-01"),
        _entry("me", 1, "2026-01-02"),
        _entry("later", 1, "2026-01-04"),
        _entry("low", 0, "2026-01-01"),
    ]
    report = admission.queue_report("me", entries, limit=10)
    assert (report.position, report.admitted) == (3, False)
    assert report.message() == (
        "2 jobs ahead (1 critical, 1 high); 10 of 10 running (workers.maxConcurrentJobs)"
    )
    first = admission.queue_report("crit", entries, limit=10)
    assert first.position == 1
    assert first.message() == "next in line; 10 of 10 running (workers.maxConcurrentJobs)"
    one = admission.queue_report("high", entries, limit=10).message()
    assert one.startswith("1 job ahead (1 critical);")


def test_condition_transition_time_moves_only_on_status_change() -> None:
    c1 = conditions.set_condition([], "Running", True, "A", "m", 1, now="t1")
    c2 = conditions.set_condition(c1, "Running", True, "B", "m2", 2, now="t2")
    assert c2[0]["lastTransitionTime"] == "t1" and c2[0]["reason"] == "B"
    c3 = conditions.set_condition(c2, "Running", False, "C", "m3", 2, now="t3")
    assert c3[0]["lastTransitionTime"] == "t3" and c3[0]["status"] == "False"


def test_progress_fields_and_eta() -> None:
    numbers = job_status.RunningNumbers(
        paths_done=370,
        paths_total=1000,
        estimate=5.0,
        std_err=0.1,
        ci_level=0.95,
        ci_lower=4.8,
        ci_upper=5.2,
    )
    fields = job_status.progress_fields(numbers, paths_per_second=10.0)
    assert fields["progress"] == "37%"
    assert fields["etaSeconds"] == 63
    assert fields["confidenceInterval"] == {"level": 0.95, "lower": 4.8, "upper": 5.2}


def test_progress_hides_nan() -> None:
    numbers = job_status.RunningNumbers(0, 1000, float("nan"), None, 0.95, None, None)
    fields = job_status.progress_fields(numbers, None)
    assert "estimate" not in fields and "stdErr" not in fields and fields["progress"] == "0%"


def test_worker_failure_reasons() -> None:
    deadline = {
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "x"}
            ]
        }
    }
    backoff = {
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "FailedIndexes", "message": "y"}
            ]
        }
    }
    assert job_status.worker_job_failure(deadline)[0] == "DeadlineExceeded"  # type: ignore[index]
    assert job_status.worker_job_failure(backoff)[0] == "WorkerFailed"  # type: ignore[index]
    assert job_status.worker_job_failure({"status": {}}) is None


def test_pod_failure_summary_names_the_shard_and_exit_code() -> None:
    pod = {
        "metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": "2"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "state": {
                        "terminated": {"exitCode": 3, "reason": "Error", "message": "boom\nbad"}
                    }
                }
            ],
        },
    }
    assert job_status.pod_failure_summary([pod]) == "shard 2: exit code 3 (Error): bad"


def test_pod_failure_summary_of_an_oom_kill_names_the_field_to_raise() -> None:
    pod = {
        "metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ],
        },
    }
    summary = job_status.pod_failure_summary([pod])
    assert summary is not None
    assert summary.startswith("shard 0: exit code 137 (OOMKilled): ")
    assert "spec.resources.limits.memory" in summary


def test_admissions_made_here_count_before_the_index_shows_them() -> None:
    entries = [_entry("a", 1, "2026-01-01"), _entry("b", 1, "2026-01-02")]
    merged = admission.merge_local(entries, {"a"})
    assert admission.may_start("b", merged, limit=1) == (False, 1)
    assert admission.job_counts(merged) == {"running": 1, "queued": 1}


def test_suspended_jobs_free_their_slot() -> None:
    suspended = admission.QueueEntry("s", "s", 1, "2026", admitted=True, suspended=True)
    entries = [suspended, _entry("w", 1, "2027")]
    assert admission.may_start("w", entries, limit=1) == (True, 1)
    assert admission.job_counts(entries) == {"running": 0, "queued": 1}


def test_silent_pods_are_those_that_reported_then_went_quiet() -> None:
    from types import SimpleNamespace

    def pod(name: str, shard: int, created: str, phase: str = "Running") -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "creationTimestamp": created,
                "annotations": {"batch.kubernetes.io/job-completion-index": str(shard)},
            },
            "status": {"phase": phase},
        }

    t0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    reports = {
        0: SimpleNamespace(heartbeat=t0, state="running"),  # silent for 100 s
        1: SimpleNamespace(heartbeat=t0 + 95, state="running"),  # fresh
        2: SimpleNamespace(heartbeat=t0, state="done"),  # finished shards go quiet
        3: SimpleNamespace(heartbeat=t0, state="running"),  # its pod is a new replacement
    }
    pods = [
        pod("p0", 0, "2027-01-15T07:59:00Z"),
        pod("p1", 1, "2027-01-15T07:59:00Z"),
        pod("p2", 2, "2027-01-15T07:59:00Z"),
        pod("p3", 3, "2027-01-15T08:01:00Z"),
    ]
    lost = job_status.silent_pods(reports, pods, now=t0 + 100, heartbeat_interval=30)
    assert [(shard, name) for shard, name, _ in lost] == [(0, "p0")]
    assert job_status.silent_pods(reports, pods, now=t0 + 80, heartbeat_interval=30) == []


# --------------------------------------------------------------------------- worker placement


def _placed_job(tuning_template: dict[str, Any], job_template: dict[str, Any] | None) -> Any:
    tuning = tuning_from_spec("default", {"workers": {"template": tuning_template}})
    spec = _spec() if job_template is None else _spec(workerTemplate=job_template)
    return builders.build_worker_job(REF, spec, "sha256:00", tuning, "montecarlo-high", "img:1")


def test_the_namespace_default_placement_reaches_the_pods() -> None:
    template = {
        "nodeSelector": {"pool": "compute"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccountName": "mc-workers",
        "imagePullSecrets": [{"name": "regcred"}],
        "labels": {"team": "rates"},
        "annotations": {"example.com/owner": "rates"},
    }
    pod = _placed_job(template, None)["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "compute"}
    assert pod["spec"]["tolerations"] == template["tolerations"]
    assert pod["spec"]["serviceAccountName"] == "mc-workers"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["automountServiceAccountToken"] is False  # a named account gets no token
    assert pod["metadata"]["labels"]["team"] == "rates"
    assert pod["metadata"]["labels"][naming.JOB_LABEL] == "spx-asian"
    assert pod["metadata"]["annotations"] == {"example.com/owner": "rates"}


def test_the_jobs_placement_wins_field_by_field() -> None:
    default = {
        "nodeSelector": {"pool": "compute"},
        "tolerations": [{"key": "spot", "operator": "Exists"}],
        "labels": {"team": "rates", "tier": "batch"},
    }
    own = {
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "labels": {"tier": "urgent"},
        "affinity": {"nodeAffinity": {}},
    }
    pod = _placed_job(default, own)["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "compute"}  # not given by the job: inherited
    assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]  # replaced whole
    assert pod["spec"]["affinity"] == {"nodeAffinity": {}}
    labels = pod["metadata"]["labels"]
    assert (labels["team"], labels["tier"]) == ("rates", "urgent")  # merged key by key


def test_the_operators_labels_win_and_placement_stays_out_of_the_engines_spec() -> None:
    job = _placed_job({}, {"labels": {naming.JOB_LABEL: "other", "team": "fx"}})
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[naming.JOB_LABEL] == "spx-asian" and labels["team"] == "fx"
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "workerTemplate" not in env["MCOP_SPEC"]


def test_no_template_changes_nothing() -> None:
    plain = _job()
    assert _placed_job({}, None) == plain
    assert "nodeSelector" not in plain["spec"]["template"]["spec"]


# --------------------------------------------------------------------------- default connection


def test_the_default_connection_is_read_from_the_environment() -> None:
    from mcop_operator.config import DefaultConnection, OperatorConfig

    assert OperatorConfig.from_env({}).default_connection is None
    default = OperatorConfig.from_env(
        {"MCOP_DEFAULT_CONNECTION_NAMESPACE": "mcop", "MCOP_DEFAULT_REDIS_SECRET": "r/url"}
    ).default_connection
    assert default == DefaultConnection("mcop", ("r", "url"), ("montecarlo-postgres", "dsn"))
    with pytest.raises(ValueError, match="SECRET/KEY"):
        DefaultConnection.from_env(
            {"MCOP_DEFAULT_CONNECTION_NAMESPACE": "mcop", "MCOP_DEFAULT_REDIS_SECRET": "r"}
        )


def test_workers_on_the_default_connection_read_the_jobs_own_copy() -> None:
    secret = builders.build_connection_secret(REF, {"redis-url": "u", "postgres-dsn": "d"})
    assert secret["metadata"]["name"] == "spx-asian-connection"
    assert secret["metadata"]["namespace"] == "quants"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == REF.uid
    tuning = builders.on_connection_secret(tuning_from_spec("default", None), REF)
    job = builders.build_worker_job(REF, _spec(), "sha256:00", tuning, "montecarlo-high", "img:1")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MCOP_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"] == {
        "name": "spx-asian-connection",
        "key": "postgres-dsn",
    }
    assert env["MCOP_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "spx-asian-connection"
