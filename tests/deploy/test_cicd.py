"""CI/CD: the GitHub workflows are valid against GitHub's workflow schema (check-jsonschema
ships it) and do what the release process needs; skaffold's dev and prod profiles deploy
the overlays with one artifact per service.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
# Every image: the services and the web front end (web/Dockerfile).
IMAGES = sorted([*SERVICES, "web", "model-server"])
DOCKERFILES = {name: f"services/{name}/Dockerfile" for name in SERVICES} | {
    # The embedding image is the onnx one; the torch variant (services/embedding/Dockerfile)
    # is built and released beside it as aimesh-embedding:<tag>-torch.
    "embedding": "services/embedding/Dockerfile.onnx",
    "web": "web/Dockerfile",
    "model-server": "services/llm-router/model-server/Dockerfile",
}
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

Obj = dict[str, Any]


def check(*args: str) -> subprocess.CompletedProcess[str]:
    if not CHECK_JSONSCHEMA.is_file():
        pytest.skip("check-jsonschema is not installed (requirements-dev)")
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), *args], capture_output=True, text=True, timeout=120, check=False
    )


def workflow(name: str) -> Obj:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    loaded: dict[Any, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return {("on" if key is True else str(key)): value for key, value in loaded.items()}


def run_lines(job: Obj) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "release.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(path: Path) -> None:
    result = check("--builtin-schema", "vendor.github-workflows", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    # `runs-on` misspelled and a step with neither `run` nor `uses`.
    bad.write_text("on: push\njobs:\n  x:\n    run-on: ubuntu-24.04\n    steps:\n      - name: a\n")
    result = check("--builtin-schema", "vendor.github-workflows", str(bad))
    assert result.returncode != 0


def test_ci_lints_tests_validates_and_builds_every_image() -> None:
    jobs = workflow("ci.yml")["jobs"]
    assert "make lint" in run_lines(jobs["lint"])
    assert "make test" in run_lines(jobs["test"])
    manifests = run_lines(jobs["manifests"])
    assert "make k8s-validate" in manifests
    assert "vendor.github-workflows" in manifests
    built = {entry["dockerfile"] for entry in jobs["images"]["strategy"]["matrix"]["include"]}
    expected = set(DOCKERFILES.values())
    assert built == expected | {"services/embedding/Dockerfile"}
    for step in jobs["images"]["steps"]:
        if step.get("uses", "").startswith("docker/build-push-action"):
            assert step["with"]["push"] is False


def test_release_pushes_versioned_images_then_deploys_prod_with_skaffold() -> None:
    release = workflow("release.yml")
    assert release["on"]["push"]["tags"] == ["v*.*.*"]
    jobs = release["jobs"]
    assert jobs["images"]["needs"] == "verify"
    assert jobs["deploy"]["needs"] == "images"
    assert jobs["deploy"]["environment"] == "production"
    push = next(
        s for s in jobs["images"]["steps"] if s.get("uses", "").startswith("docker/build-push")
    )
    assert push["with"]["push"] is True
    assert "${{ github.ref_name }}" in push["with"]["tags"]
    assert "latest" not in push["with"]["tags"]
    deploy = run_lines(jobs["deploy"])
    assert "skaffold deploy -p prod" in deploy
    for name in IMAGES:
        assert f"aimesh-{name}:${{{{ github.ref_name }}}}" in deploy
    pushed = {entry["dockerfile"] for entry in jobs["images"]["strategy"]["matrix"]["include"]}
    assert pushed >= set(DOCKERFILES.values())
    # Secrets reach the job through env, never inline in a command.
    assert "secrets." not in deploy


# skaffold


@pytest.fixture(scope="module")
def skaffold() -> Obj:
    config: Obj = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    return config


def test_skaffold_has_dev_and_prod_profiles(skaffold: Obj) -> None:
    profiles = {p["name"]: p for p in skaffold["profiles"]}
    assert set(profiles) == {"dev", "prod"}
    for name, profile in profiles.items():
        paths = profile["manifests"]["kustomize"]["paths"]
        assert paths == [f"k8s/overlays/{name}"]
        assert (ROOT / paths[0] / "kustomization.yaml").is_file()
        forwards = [
            (f["resourceType"], f["resourceName"], f["port"]) for f in profile["portForward"]
        ]
        assert ("service", "gateway", 8000) in forwards
    assert profiles["prod"]["build"]["local"]["push"] is True
    assert profiles["prod"]["deploy"]["statusCheck"] is True


def test_skaffold_builds_one_artifact_per_service(skaffold: Obj) -> None:
    images = [a["image"] for a in skaffold["build"]["artifacts"]]
    assert sorted(images) == [f"aimesh-{name}" for name in IMAGES]
    for artifact in skaffold["build"]["artifacts"]:
        name = artifact["image"].removeprefix("aimesh-")
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == DOCKERFILES[name]
        assert (ROOT / DOCKERFILES[name]).is_file()
    for profile in skaffold["profiles"]:
        # A profile may change how images are built or tagged, not which images exist.
        assert "artifacts" not in profile.get("build", {})


def test_skaffold_images_are_the_ones_the_overlays_rewrite(skaffold: Obj) -> None:
    images = {a["image"] for a in skaffold["build"]["artifacts"]}
    for overlay in ("dev", "prod"):
        kustomization = yaml.safe_load(
            (ROOT / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        renamed = {entry["name"] for entry in kustomization.get("images", [])}
        assert renamed <= images, overlay
