"""Render the Kubernetes manifests with kustomize and validate them offline.

Every kustomization given (default: ``k8s/base`` and every overlay under ``k8s/overlays``)
is rendered with ``kustomize build`` or, when no standalone kustomize is installed,
``kubectl kustomize``. Each rendered object is then validated with kubernetes-validate in
strict mode (unknown fields are errors) against the oldest and the newest Kubernetes
version aimesh supports. No cluster is contacted.

Custom resources (KEDA, Prometheus Operator) have no schema in kubernetes-validate; those
kinds, listed in ``CUSTOM_KINDS``, are validated against the strict schemas in
``k8s/schemas`` (the subset of each CRD's schema that aimesh uses) instead. Any other kind
without a schema is an error.

Exit status: 0 when everything is valid, 1 when a manifest is invalid, 2 when the
manifests cannot be rendered at all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = (
    ROOT / "k8s" / "base",
    *sorted(p.parent for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml")),
)
SCHEMAS = ROOT / "k8s" / "schemas"
# Custom resource kinds kubernetes-validate has no schema for, and the schema used instead.
CUSTOM_KINDS: dict[tuple[str, str], Path] = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "prometheusrule.json",
}
# Native gRPC probes are GA from 1.27; 1.29 is the oldest release aimesh is tested against.
OLDEST_VERSION = "1.29.0"


class RenderError(Exception):
    """kustomize could not render a kustomization (the message says why)."""


@dataclass(frozen=True)
class Problem:
    """One invalid object: where it came from, which object, and what is wrong."""

    source: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.resource}: {self.message}"


def kustomize_command(path: Path) -> list[str]:
    """The command that renders ``path``: standalone kustomize, else kubectl's built-in one."""
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build", str(path)]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize", str(path)]
    raise RenderError("neither `kustomize` nor `kubectl` is on PATH; install one of them")


def render(path: Path) -> list[dict[str, Any]]:
    """Render one kustomization into its list of objects."""
    if not (path / "kustomization.yaml").is_file():
        raise RenderError(f"{path}: no kustomization.yaml here")
    result = subprocess.run(
        kustomize_command(path), capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise RenderError(f"{path}: kustomize failed:\n{result.stderr.strip()}")
    if result.stderr.strip():
        # Deprecation notices and the like: shown, not fatal.
        print(f"{path}: kustomize says:\n{result.stderr.strip()}", file=sys.stderr)
    try:
        documents = list(yaml.safe_load_all(result.stdout))
    except yaml.YAMLError as error:
        raise RenderError(f"{path}: kustomize output is not YAML: {error}") from None
    objects = [doc for doc in documents if doc is not None]
    if not objects:
        raise RenderError(f"{path}: kustomize rendered no objects")
    return objects


def describe(obj: dict[str, Any]) -> str:
    """``kind/name`` as kubectl prints it."""
    kind = str(obj.get("kind", "<no kind>")).lower()
    metadata = obj.get("metadata")
    name = metadata.get("name", "<no name>") if isinstance(metadata, dict) else "<no name>"
    return f"{kind}/{name}"


def validate_object(obj: dict[str, Any], version: str) -> str | None:
    """None when ``obj`` is valid for ``version``; otherwise a readable reason."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path) or "(top level)"
        return f"{where}: {error.message} (Kubernetes {version})"
    except kubernetes_validate.SchemaNotFoundError:
        return (
            f"no schema for {obj.get('apiVersion')}/{obj.get('kind')} in Kubernetes {version} "
            "(unknown or removed API version)"
        )
    return None


def validate_custom(obj: dict[str, Any], schema_path: Path) -> str | None:
    """None when a custom resource matches its schema in k8s/schemas; else the first reason."""
    schema = json.loads(schema_path.read_text())
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path)
    )
    if not errors:
        return None
    error = errors[0]
    where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    return f"{where}: {error.message} ({schema_path.relative_to(ROOT)})"


def validate(
    objects: Sequence[Any], source: str, versions: Sequence[str], custom: list[str] | None = None
) -> list[Problem]:
    """Every problem of every object against every version (first problem per version).

    Objects of a kind in ``CUSTOM_KINDS`` are validated against their schema in k8s/schemas
    instead; ``custom`` collects them.
    """
    problems: list[Problem] = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
            problems.append(Problem(source, f"document {index}", "not a Kubernetes object"))
            continue
        schema = CUSTOM_KINDS.get((str(obj["apiVersion"]), str(obj["kind"])))
        if schema is not None:
            if custom is not None:
                custom.append(f"{source}: {describe(obj)}")
            if reason := validate_custom(obj, schema):
                problems.append(Problem(source, describe(obj), reason))
            continue
        for version in versions:
            if reason := validate_object(obj, version):
                problems.append(Problem(source, describe(obj), reason))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=list(DEFAULT_PATHS),
        help="kustomization directories (default: k8s/base and every k8s/overlays/*)",
    )
    parser.add_argument(
        "-k",
        "--kubernetes-version",
        dest="versions",
        action="append",
        help=f"validate against this version; repeatable (default: {OLDEST_VERSION} and latest)",
    )
    args = parser.parse_args(argv)
    versions: list[str] = args.versions or [OLDEST_VERSION, kubernetes_validate.latest_version()]

    problems: list[Problem] = []
    custom: list[str] = []
    counted = 0
    sources: list[str] = []
    for path in args.paths:
        resolved = path.resolve()
        source = str(resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved)
        try:
            objects = render(resolved)
        except (RenderError, subprocess.TimeoutExpired) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        counted += len(objects)
        sources.append(source)
        problems += validate(objects, source, versions, custom)

    if problems:
        print(f"{len(problems)} invalid manifest(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f"ok: {counted} objects from {', '.join(sources)} are valid "
        f"(strict, Kubernetes {', '.join(versions)}; {len(custom)} custom resources "
        "against k8s/schemas)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
