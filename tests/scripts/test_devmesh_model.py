"""How `make run` wires the local model server: its own optional process, the router's
AIMESH_LLM_LOCAL_MODEL_URL, and what the banner says (no process is started here)."""

from __future__ import annotations

from pathlib import Path

from scripts.devmesh import Mesh, Ports, model_note


def test_the_model_server_is_an_optional_process_the_router_points_at(tmp_path: Path) -> None:
    ports = Ports.free()
    mesh = Mesh(tmp_path, ports=ports, model_server=True)
    model = mesh.service("model")
    assert model.optional
    assert model.command[0].endswith("aimesh-model-server")
    assert (model.env["AIMESH_PORT"], model.env["AIMESH_HOST"]) == (
        str(ports.model_server),
        "127.0.0.1",
    )
    assert model.env["AIMESH_DATA_DIR"] == str(tmp_path)
    router = mesh.service("llm-router")
    assert router.env["AIMESH_LLM_LOCAL_MODEL_URL"] == f"http://127.0.0.1:{ports.model_server}/v1"
    assert not any(service.optional for service in mesh.services if service is not model)
    assert len({*vars(ports).values()}) == 8  # every port distinct


def test_without_it_the_router_has_no_model_url(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path, ports=Ports.free())
    assert [s.name for s in mesh.services] == ["embedding", "retrieval", "llm-router", "gateway"]
    assert "AIMESH_LLM_LOCAL_MODEL_URL" not in mesh.service("llm-router").env


def test_the_banner_says_when_the_first_start_converts(tmp_path: Path) -> None:
    url = "http://127.0.0.1:8090"
    first = model_note(tmp_path, url, hosted=False)
    assert "first start: converting SmolLM2-135M-Instruct" in first
    assert "serves chat (alias local-model)" in first
    assert "chat answers extractively" in first
    (tmp_path / "models" / "SmolLM2-abc123-openvino").mkdir(parents=True)
    again = model_note(tmp_path, url, hosted=True)
    assert "loading the converted model" in again
    assert "listed as local-model" in again
