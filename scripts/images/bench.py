"""Size and cold start of each image against the old build of it (``make bench-images``).

For every image: the current one (``aimesh-<name>:latest``, from ``make images``) and one
built in the same run from the Dockerfile as it was before the images work (git ref
``--old-ref``; default: the commit before scripts/images/build.py was added), with the same
build context, base images and build arguments, so only the Dockerfile differs. Cold start
is the time from ``podman run`` (read-only root, uid 10001, as in Kubernetes) to the first
successful probe: gRPC health for the gRPC services, GET /health for the model server,
GET /healthz for the gateway (its readiness needs the other services) and the web image;
the median of ``--runs`` starts. Results go to docs/deploy.md between the markers
``<!-- bench-images -->`` and ``<!-- /bench-images -->``.

Run it on a quiet machine: it refuses when the 1-minute load average is 2 or more
(``--force`` overrides), as timings taken beside other work say nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.images.build import IMAGES, ROOT, Image, build, detect_engine, local_build_args

DOC = os.path.join(ROOT, "docs", "deploy.md")
BEGIN, END = "<!-- bench-images -->", "<!-- /bench-images -->"
# What answers "ready" for a lone container: (port, kind, path).
PROBES = {
    "gateway": (8000, "http", "/healthz"),
    "llm-router": (50053, "grpc", ""),
    "retrieval": (50052, "grpc", ""),
    "embedding": (50051, "grpc", ""),
    "model-server": (8090, "http", "/health"),
    "web": (8080, "http", "/healthz"),
}
# Before the images work the embedding image was the torch one (services/embedding/Dockerfile).
OLD_DOCKERFILE = {"embedding": "services/embedding/Dockerfile"}


@dataclass
class Result:
    name: str
    size: int
    starts: list[float]

    @property
    def start(self) -> float:
        return statistics.median(self.starts)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", ROOT, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def default_old_ref() -> str:
    added = _git("log", "--diff-filter=A", "--format=%H", "--", "scripts/images/build.py")
    return f"{added.splitlines()[-1]}^" if added else "HEAD"


def old_dockerfile(image: Image, ref: str, engine: str) -> str:
    """The Dockerfile at ``ref``, its fixed base tags pointed at this run's bases."""
    path = OLD_DOCKERFILE.get(image.name, image.dockerfile)
    text = _git("show", f"{ref}:{path}")
    args = dict(a.split("=", 1) for a in local_build_args(engine) if "_IMAGE=" in a)
    replacements = {
        "python:3.11.11-slim-bookworm": args.get("PYTHON_IMAGE"),
        "node:20.19-bookworm-slim": args.get("NODE_IMAGE"),
        "nginxinc/nginx-unprivileged:1.27-alpine": args.get("NGINX_IMAGE"),
        "https://download.pytorch.org/whl/cpu": "https://pypi.org/simple" if args else None,
    }
    for old, new in replacements.items():
        if new:
            text = text.replace(old, new)
    handle, name = tempfile.mkstemp(prefix=f"old-{image.name}-", suffix=".Dockerfile")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    return name


def size(engine: str, ref: str) -> int:
    out = subprocess.run(
        [engine, "image", "inspect", "-f", "{{.Size}}", ref],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def ready(kind: str, port: int, path: str) -> bool:
    if kind == "grpc":
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def cold_start(engine: str, name: str, ref: str, timeout: float = 300) -> float:
    from tests.conftest import free_port

    container_port, kind, path = PROBES[name]
    host_port = free_port()
    cmd = [engine, "run", "-d", "--rm", "--read-only", "--tmpfs", "/tmp:rw,mode=1777"]  # noqa: S108 - the container's /tmp
    cmd += ["--user", "10001:10001", "-p", f"127.0.0.1:{host_port}:{container_port}"]
    if name == "web":  # nginx resolves its upstream at start
        cmd += ["--add-host", "gateway:127.0.0.1"]
    begin = time.monotonic()
    container = subprocess.run(
        [*cmd, ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        while time.monotonic() - begin < timeout:
            if ready(kind, host_port, path):
                return time.monotonic() - begin
            time.sleep(0.05)
        raise SystemExit(f"{ref} was not ready after {timeout:.0f} s")
    finally:
        subprocess.run([engine, "rm", "-f", "-t", "2", container], capture_output=True, check=False)


def table(rows: list[tuple[Result, Result]], old_ref: str) -> str:
    lines = [
        BEGIN,
        f"Measured by `make bench-images` ({time.strftime('%Y-%m-%d')}, against the Dockerfiles "
        f"at `{old_ref[:12]}`, same run, same bases). Cold start: `podman run` to the first "
        "successful probe, median of the runs.",
        "",
        "| image | size (old) | size (new) | cold start (old) | cold start (new) |",
        "|---|---:|---:|---:|---:|",
    ]
    for old, new in rows:
        lines.append(
            f"| {new.name} | {old.size / 1e6:.0f} MB | {new.size / 1e6:.0f} MB | "
            f"{old.start:.1f} s | {new.start:.1f} s |"
        )
    lines.append(END)
    return "\n".join(lines)


def write_doc(text: str) -> None:
    with open(DOC, encoding="utf-8") as file:
        doc = file.read()
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + text + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip() + "\n\n## Image size and cold start\n\n" + text + "\n"
    with open(DOC, "w", encoding="utf-8") as file:
        file.write(doc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="images (default: all six)")
    parser.add_argument("--old-ref", default=None, help="git ref of the old Dockerfiles")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--force", action="store_true", help="run even on a busy machine")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/deploy.md")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    if load >= 2 and not args.force:
        raise SystemExit(f"load average {load:.1f} >= 2: timings would be spoiled (--force to run)")
    engine = detect_engine()
    old_ref = args.old_ref or default_old_ref()
    extra = local_build_args(engine)
    rows: list[tuple[Result, Result]] = []
    for image in [i for i in IMAGES if not args.names or i.name in args.names]:
        dockerfile = old_dockerfile(image, old_ref, engine)
        try:
            old_image = Image(f"{image.name}-old", dockerfile)
            build(engine, old_image, "bench", extra, quiet=True)
        finally:
            os.unlink(dockerfile)
        results = []
        for ref, label in (
            (f"aimesh-{image.name}-old:bench", "old"),
            (f"aimesh-{image.name}:latest", "new"),
        ):
            starts = [cold_start(engine, image.name, ref) for _ in range(args.runs)]
            results.append(Result(image.name, size(engine, ref), starts))
            print(
                f"{image.name:13} {label}: {results[-1].size / 1e6:6.0f} MB, cold start "
                f"{results[-1].start:5.1f} s ({', '.join(f'{s:.1f}' for s in starts)})",
                flush=True,
            )
        rows.append((results[0], results[1]))
    text = table(rows, old_ref)
    print(text)
    if not args.no_write:
        write_doc(text)


if __name__ == "__main__":
    main()
