"""The image build passes each Dockerfile only the build arguments it declares."""

from __future__ import annotations

from pathlib import Path

from scripts.images.build import IMAGES, ROOT, declared_args, only_declared


def test_declared_args_read_names_with_and_without_defaults(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\narg TORCH_INDEX\n"
        "RUN echo ARG NOT_ONE\n",
        encoding="utf-8",
    )
    assert declared_args(str(dockerfile)) == {"PYTHON_IMAGE", "TORCH_INDEX"}


def test_undeclared_build_args_are_dropped_and_the_rest_kept_in_order() -> None:
    extra = [
        "--pull=never",
        "--build-arg",
        "PYTHON_IMAGE=local/python",
        "--build-arg",
        "TORCH_INDEX=https://pypi.org/simple",
        "-v",
        "/a:/a:ro",
        "--build-arg",
        "NODE_IMAGE=local/node",
    ]
    assert only_declared(extra, {"PYTHON_IMAGE"}) == [
        "--pull=never",
        "--build-arg",
        "PYTHON_IMAGE=local/python",
        "-v",
        "/a:/a:ro",
    ]


def test_only_the_embedding_images_take_the_torch_index() -> None:
    takes = {
        image.name
        for image in IMAGES
        if "TORCH_INDEX" in declared_args(str(Path(ROOT) / image.dockerfile))
    }
    assert takes == {"embedding"}
