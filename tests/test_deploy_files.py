"""The deployment files: the Kubernetes sketch is valid, and every setting they use exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from apikeys.config import Settings
from tests.proxies import traefik_dynamic_config

pytestmark = pytest.mark.full

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes.yaml"
COMPOSE = ROOT / "compose.yaml"
VALIDATE = str(Path(sys.executable).with_name("kubernetes-validate"))


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VALIDATE, "--strict", "--quiet", str(path)], capture_output=True, text=True, timeout=120
    )


def setting_names(path: Path) -> set[str]:
    return set(re.findall(r"\bAPIKEYS_[A-Z_]+", path.read_text()))


def test_kubernetes_sketch_is_valid_against_the_kubernetes_schemas() -> None:
    result = validate(KUBERNETES)

    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_misspelt_field(tmp_path: Path) -> None:
    documents: list[dict[str, Any]] = list(yaml.safe_load_all(KUBERNETES.read_text()))
    deployment = next(document for document in documents if document["kind"] == "Deployment")
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))

    assert validate(broken).returncode != 0


def test_every_apikeys_variable_the_deployment_files_set_is_a_setting() -> None:
    known = {f"APIKEYS_{name.upper()}" for name in Settings.model_fields}
    used = setting_names(KUBERNETES) | setting_names(COMPOSE) | setting_names(ROOT / "Dockerfile")

    assert "APIKEYS_PUBLIC_URL" in used
    assert used <= known, used - known


def test_compose_runs_migrations_once_before_two_replicas_behind_the_proxy() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]

    assert services["migrate"]["command"] == ["apikeys", "migrate"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["api"]["environment"]["APIKEYS_PUBLIC_URL"] == "http://localhost:8080"
    assert "127.0.0.1:8080:8080" in services["proxy"]["ports"]
    assert "ports" not in services["api"]


def test_the_readmes_traefik_configuration_is_the_one_the_forward_auth_test_runs() -> None:
    tested = traefik_dynamic_config("http://127.0.0.1:8000", "http://127.0.0.1:9000")

    assert f"```yaml\n{tested}```" in (ROOT / "README.md").read_text()


def test_the_readmes_nginx_excerpt_is_taken_from_the_forward_auth_config() -> None:
    shipped = {
        " ".join(line.split())
        for line in (ROOT / "deploy" / "nginx-forward-auth.conf").read_text().splitlines()
    }
    readme = (ROOT / "README.md").read_text()
    excerpt = readme.split("```nginx\n", 1)[1].split("```", 1)[0]

    for line in excerpt.splitlines():
        directive = " ".join(line.split("#", 1)[0].split())
        if directive and directive not in ("}",) and not directive.startswith("if ("):
            assert directive in shipped, directive
