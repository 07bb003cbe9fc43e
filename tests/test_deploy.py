"""The deployment files: compose.yaml validates against the Compose specification (check-jsonschema's
vendored compose-spec schema; `docker compose config` where Docker's compose plugin is installed) and
the Dockerfile passes hadolint; the topology is the one README "At scale" describes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing (CI=true): pip install -e '.[test]' installs it")
        pytest.skip(f"{name} is not installed here: pip install -e '.[test]' installs it")
    return found


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_compose_file_is_valid_compose():
    done = _validate(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_refuses_a_broken_compose_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    stop_grace_period: 6m\n", "    stop_grace_period: [6]\n", 1))
    done = _validate(broken)
    assert done.returncode != 0 and "stop_grace_period" in done.stdout + done.stderr


def test_docker_compose_config_accepts_it_where_docker_compose_is_installed():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("Docker's compose plugin is not installed here; the schema test above validates the file")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SPAWNER_SECRET_KEY": "x" * 50},
    )
    assert done.returncode == 0, done.stderr


def test_the_dockerfile_passes_hadolint():
    done = subprocess.run([_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_as_a_user_and_collects_static_files():
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and "FROM python:3.11-slim\n" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert '".[postgres,redis]"' in text and "collectstatic --noinput" in text
    assert text.index("USER ") < text.index("collectstatic")  # the files belong to the user


def test_the_topology_postgres_redis_web_and_two_named_clusters_sharing_logs():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"postgres", "redis", "migrate", "web", "cluster-1", "cluster-2"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service or name == "migrate", f"{name} has no healthcheck"
    for name in ("web", "cluster-1", "cluster-2"):
        service = services[name]
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        assert mounts[env["SPAWNER_LOG_STORAGE_DIR"]] == "logs", f"{name} does not mount the shared logs"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["cluster-1"]["environment"]["SPAWNER_CLUSTER_NAME"] == "cluster-1"
    assert services["cluster-2"]["environment"]["SPAWNER_CLUSTER_NAME"] == "cluster-2"
    assert "--no-cluster" in services["web"]["command"]
    assert services["cluster-1"]["command"][-1] == "spawner_cluster"


def test_every_spawner_variable_the_deployment_sets_is_one_spawner_reads():
    read = "\n".join(p.read_text() for p in (ROOT / "spawner").rglob("*.py"))
    used = set(re.findall(r"\b(SPAWNER_[A-Z_]+)\b", COMPOSE.read_text() + DOCKERFILE.read_text()))
    unknown = {name for name in used if f'"{name}"' not in read and name != "SPAWNER_IMAGE"}
    unknown.discard("SPAWNER_PORT")  # compose's own: the published port
    assert not unknown, f"set by the deployment, read by nothing: {sorted(unknown)}"
