"""The container image, tested without a container engine: the Dockerfile's shape (pinned base,
multi-stage, no build tools or secrets in the final stage, numeric non-root user, `mcop`
entrypoint), the build context (.dockerignore), the wheel the builder stage makes, and that every
command the chart and the operator run exists in the installed package."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chart_harness import CHART, ROOT, by_kind, render
from mcop_operator.builders import WORKER_UID, JobRef, build_worker_job
from mcop_operator.tuning import tuning_from_spec

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MCOP = Path(sys.executable).parent / "mcop"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): instructions with continuation lines joined."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            logical.append(current)
            current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, f"cannot read FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
            stages.append(Stage(base=base, name=match.group(2)))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_base_image_is_a_pinned_slim_python_311(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    bases = {stage.base for stage in stages if stage.base not in {s.name for s in stages}}
    assert len(bases) == 1, f"one base image for every stage, found {bases}"
    (base,) = bases
    # A patch release and a Debian release (optionally a digest): never `latest` or `3.11-slim`.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base), (
        base
    )


def test_multi_stage_build_installs_wheels_without_build_tools(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    assert len(stages) >= 2 and stages[0].name == "builder"
    assert any("pip wheel" in run for run in stages[0].all("RUN"))
    final = stages[-1]
    assert final.name is None, "the final stage is the image"
    runs = " ".join(final.all("RUN"))
    assert "--no-index" in runs and "from=builder" in runs, "install only the builder's wheels"
    for tool in ("gcc", "build-essential", "apt-get install", "git ", "curl", "wget"):
        assert tool not in runs, f"{tool} in the final stage"
    assert not final.all("COPY") or all("--from=builder" in c for c in final.all("COPY")), (
        "the final stage copies no sources"
    )


def test_final_user_is_numeric_non_root_and_the_pods_uid(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    users = stages[-1].all("USER")
    assert users, "no USER in the final stage: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric user (runAsNonRoot can check it)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert int(uid) == WORKER_UID, "worker pods run as mcop_operator.builders.WORKER_UID"
    deployment = next(
        d for d in by_kind(render(), "Deployment") if d["metadata"]["name"].endswith("operator")
    )
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_is_mcop_and_caches_go_to_tmp(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    final = stages[-1]
    assert final.all("ENTRYPOINT") == ['["mcop"]']
    env = " ".join(final.all("ENV"))
    assert "NUMBA_CACHE_DIR=/tmp/numba-cache" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env


def test_no_secrets_in_the_image(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    args, stages = dockerfile
    names = list(args)
    for stage in stages:
        names += [a.partition("=")[0] for a in stage.all("ARG")]
        names += re.findall(r"(\w+)=", " ".join(stage.all("ENV")))
        for copied in stage.all("COPY") + stage.all("ADD"):
            assert not re.search(r"\.env\b|kubeconfig|\.pem|\.key|id_rsa|\.netrc", copied), copied
    secretive = [n for n in names if re.search(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|API_KEY", n)]
    assert not secretive, secretive


# -- the build context ---------------------------------------------------------------------------
def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**` any folders, `*` and `?` within one name."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins, `!` re-includes, and a pattern that matches
    a folder matches everything below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def dockerignore() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    patterns = dockerignore()
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    sources = []
    for stage in stages:
        for copied in stage.all("COPY"):
            if "--from=" not in copied:
                sources += copied.split()[:-1]
    assert sources
    for source in sources:
        path = source.rstrip("/")
        assert (ROOT / path).exists(), f"COPY {source}: missing"
        assert not ignored(path, patterns), f"COPY {source}: excluded by .dockerignore"
    for path in ("worker/mcop_worker/cli.py", "operator/mcop_operator/main.py",
                 "crds/montecarlojob.yaml"):  # fmt: skip
        assert not ignored(path, patterns), path
    for path in (".git/config", ".venv/bin/python", "tests/test_chart.py", "charts/x",
                 "worker/mcop_worker/__pycache__/cli.cpython-311.pyc", "devcluster/go/k8s/go.mod",
                 "devcluster/mcop_devcluster/podrunner.py",
                 "benchmarks/bench_engine.py", "docs/rbac.md"):  # fmt: skip
        assert ignored(path, patterns), f"{path} would be in the build context"


def test_builder_stage_wheel_has_the_entrypoint_and_the_crds(tmp_path: Path) -> None:
    """`pip wheel .` as the builder stage runs it (sources only, the CRDs through the symlink)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("montecarlo_operator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "mcop = mcop_worker.cli:main" in archive.read(entry_points).decode()
        for crd in (ROOT / "crds").glob("*.yaml"):
            assert f"mcop_worker/model/crds/{crd.name}" in names
            assert archive.read(f"mcop_worker/model/crds/{crd.name}") == crd.read_bytes()
        assert "mcop_operator/main.py" in names and "mcop_worker/programs/worker_main.py" in names
        assert not any(n.startswith("mcop_devcluster/") for n in names), "the test harness"


# -- the commands the chart and the operator run --------------------------------------------------
def chart_containers() -> list[dict[str, Any]]:
    """Every container of the project's image in the chart's workloads (hooks included)."""
    docs = render({"redis.enabled": False, "postgresql.enabled": False})
    containers = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job", "StatefulSet"):
            containers += doc["spec"]["template"]["spec"]["containers"]
    return [c for c in containers if "montecarlo-operator" in c["image"]]


def mcop_help(*subcommand: str) -> str:
    out = subprocess.run(
        [str(MCOP), *subcommand, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, f"mcop {' '.join(subcommand)} --help: {out.stderr}"
    return out.stdout


def test_every_command_the_chart_runs_exists_in_the_package() -> None:
    containers = chart_containers()
    assert len(containers) >= 2, "the operator and the cleanup hook"
    for container in containers:
        # Without `command`, the image's ENTRYPOINT (mcop) runs `args`.
        argv = list(container.get("command") or ["mcop"]) + list(container.get("args") or [])
        if argv[0] == "mcop":
            subcommand = argv[1]
            usage = mcop_help(subcommand)
            for option in argv[2:]:
                flag = option.partition("=")[0]
                assert flag.startswith("--") and flag in usage, f"mcop {subcommand}: {flag}"
        else:
            # The cleanup hook: the image's Python with the package's dependencies.
            assert argv[:2] == ["python", "-c"], argv
            compile(argv[2], "cleanup-hook", "exec")
            for module in re.findall(r"^from (\S+) import|^import (\S+)", argv[2], re.M):
                name = module[0] or module[1]
                subprocess.run([sys.executable, "-c", f"import {name}"], check=True, timeout=60)


def test_worker_pods_run_an_existing_command() -> None:
    job = build_worker_job(
        JobRef("x", "ns", "uid"), {"shards": 1}, "sha256:0", tuning_from_spec("default", {}),
        "montecarlo-normal", "montecarlo-operator:0.1.0",
    )  # fmt: skip
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "mcop"
    assert "MCOP_JOB_UID" in mcop_help(*container["command"][1:])


def test_chart_and_dockerfile_agree_on_the_image_version() -> None:
    chart = (CHART / "Chart.yaml").read_text()
    app_version = re.search(r'^appVersion: "?([^"\n]+)"?$', chart, re.M)
    assert app_version
    assert f'org.opencontainers.image.version="{app_version.group(1)}"' in DOCKERFILE.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{app_version.group(1)}"' in pyproject
