"""Build aimesh's images with docker or podman, whichever works here (``make images``).

``python -m scripts.images.build [NAME ...] [--tag TAG] [--engine docker|podman]``

Every image builds from the repository root (it needs libs/common and constraints.txt).
Each gets two tags: the git commit (``aimesh-gateway:3f2a9c1``, ``-dirty`` appended when
the work tree has changes) and ``latest``, which compose.yaml uses by default.

The base images are build arguments (``PYTHON_IMAGE``, ``NODE_IMAGE``, ``NGINX_IMAGE``)
whose defaults are the official tags. Where podman runs with the stand-ins made by
scripts/images/prepare_podman.sh (a machine with no registry), this passes those, builds
with ``--pull=never`` and mounts that script's pip.conf, this machine's CA bundle and its
local wheel and index directories into each RUN step (``--network host``): pip reaches the
index and finds the CPU torch wheel, and none of it ends up in an image.

Images build one at a time under ``nice -n 10`` (other work shares the machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("AIMESH_IMAGES_CACHE", "/var/cache/aimesh-images")

STAND_INS = {
    "PYTHON_IMAGE": "localhost/aimesh-base/python:3.11",
    "NODE_IMAGE": "localhost/aimesh-base/node:20",
    "NGINX_IMAGE": "localhost/aimesh-base/nginx:bookworm",
}


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str
    target: str | None = None


# In build order; the model server is its own image (the router's has no engine).
IMAGES = [
    Image("gateway", "services/gateway/Dockerfile"),
    Image("llm-router", "services/llm-router/Dockerfile"),
    Image("retrieval", "services/retrieval/Dockerfile"),
    # The onnx backend only (model exported in a build stage, no torch at run time).
    Image("embedding", "services/embedding/Dockerfile.onnx"),
    Image("model-server", "services/llm-router/model-server/Dockerfile"),
    Image("web", "web/Dockerfile"),
]
# Not in `make images` by default: the torch variant of the embedding image.
EXTRA = [Image("embedding-torch", "services/embedding/Dockerfile")]


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


def detect_engine(wanted: str | None = None) -> str:
    """docker when its daemon answers, else podman; ``wanted`` forces one."""
    candidates = [wanted] if wanted else ["docker", "podman"]
    for engine in candidates:
        if engine and shutil.which(engine) and _run([engine, "info"]).returncode == 0:
            return engine
    raise SystemExit(
        "no container engine answers (`docker info` and `podman info` both fail); on a Debian "
        "machine without one run scripts/images/prepare_podman.sh"
    )


def git_tag() -> str:
    sha = _run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"]).stdout.strip() or "nogit"
    dirty = _run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).stdout
    return f"{sha}-dirty" if dirty.strip() else sha


def image_exists(engine: str, ref: str) -> bool:
    return _run([engine, "image", "inspect", ref]).returncode == 0


def local_build_args(engine: str) -> list[str]:
    """Extra arguments for a podman machine prepared by prepare_podman.sh, else none."""
    if engine != "podman" or not image_exists(engine, STAND_INS["PYTHON_IMAGE"]):
        return []
    args = ["--pull=never", "--network", "host"]
    for arg, ref in STAND_INS.items():
        args += ["--build-arg", f"{arg}={ref}"]
    pip_conf = os.path.join(CACHE, "pip.conf")
    if os.path.isfile(pip_conf):
        args += ["-v", f"{pip_conf}:/etc/pip.conf:ro"]
        # The CPU torch wheel is in the local find-links directory: point the torch
        # index at PyPI's simple API (torch 2.13.0+cpu there outranks PyPI's CUDA build).
        args += ["--build-arg", "TORCH_INDEX=https://pypi.org/simple"]
        with open(pip_conf, encoding="utf-8") as file:
            text = file.read()
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() not in ("find-links", "extra-index-url"):
                continue
            for item in value.split():
                path = item.removeprefix("file://")
                if path.endswith("/simple"):
                    path = os.path.dirname(path)
                if os.path.isdir(path):
                    args += ["-v", f"{path}:{path}:ro"]
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if os.path.isfile(bundle):
        args += ["-v", f"{bundle}:{bundle}:ro"]
    return args


def declared_args(dockerfile: str) -> set[str]:
    """The build arguments a Dockerfile declares (``ARG NAME`` or ``ARG NAME=default``)."""
    found: set[str] = set()
    with open(dockerfile, encoding="utf-8") as file:
        lines = file.read().splitlines()
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "ARG":
            found.add(words[1].split("=", 1)[0])
    return found


def only_declared(extra: list[str], declared: set[str]) -> list[str]:
    """``extra`` without the ``--build-arg NAME=...`` pairs the Dockerfile does not declare
    (the engines warn about each one left unused)."""
    kept: list[str] = []
    pairs = iter(extra)
    for item in pairs:
        if item == "--build-arg":
            value = next(pairs, "")
            if value.split("=", 1)[0] in declared:
                kept += [item, value]
            continue
        kept.append(item)
    return kept


def build(
    engine: str, image: Image, tag: str, extra: list[str], quiet: bool = False, attempts: int = 2
) -> float:
    ref = f"aimesh-{image.name}"
    cmd = ["nice", "-n", "10", engine, "build", "-f", image.dockerfile]
    cmd += ["-t", f"{ref}:{tag}", "-t", f"{ref}:latest"]
    if image.target:
        cmd += ["--target", image.target]
    extra = only_declared(extra, declared_args(os.path.join(ROOT, image.dockerfile)))
    cmd += [*extra, "--label", f"org.opencontainers.image.revision={tag}", "."]
    print(
        f"==> {ref}:{tag} ({image.dockerfile}{' target ' + image.target if image.target else ''})",
        flush=True,
    )
    start = time.monotonic()
    out = None if not quiet else subprocess.DEVNULL
    for attempt in range(1, attempts + 1):
        proc = subprocess.run(
            cmd, cwd=ROOT, check=False, stdout=out, stderr=None if not quiet else subprocess.STDOUT
        )
        if proc.returncode == 0:
            break
        if attempt < attempts:
            # A package index or mirror that drops one download fails a whole build; the
            # layers built so far are cached, so a second attempt costs only the rest.
            print(f"    building {ref} failed (exit {proc.returncode}); trying again", flush=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"building {ref} failed (exit {proc.returncode}): {' '.join(cmd)}")
    print(f"    built {ref}:{tag} in {seconds:.0f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [i.name for i in IMAGES + EXTRA]
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {names}; default all but embedding-torch"
    )
    parser.add_argument(
        "--engine", choices=["docker", "podman"], default=os.environ.get("AIMESH_ENGINE") or None
    )
    parser.add_argument(
        "--tag", default=os.environ.get("AIMESH_TAG") or None, help="default: the git commit"
    )
    parser.add_argument("--quiet", action="store_true", help="no build output (errors still fail)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(names)
    if unknown:
        parser.error(f"unknown image(s) {sorted(unknown)}; known: {names}")
    engine = detect_engine(args.engine)
    tag = args.tag or git_tag()
    wanted = [i for i in IMAGES + EXTRA if i.name in args.names] if args.names else IMAGES
    extra = local_build_args(engine)
    print(f"engine {engine}, tag {tag}{', local stand-in bases' if extra else ''}", flush=True)
    for image in wanted:
        build(engine, image, tag, extra, quiet=args.quiet)


if __name__ == "__main__":
    main()
