"""``aimesh ingest PATH... --collection C``: upload files (folders recursively) as jobs.

Each file is uploaded on its own (``POST /v1/collections/{c}/files``), so one bad file
fails alone with the gateway's reason: the gateway parses the files and decides which types
it takes (an unsupported one is answered 415 and listed as failed). The jobs are then
followed to the end with a progress bar over chunks embedded, and a summary lists what
failed and why. Exit code 0
when everything was ingested, 1 otherwise.
"""

from __future__ import annotations

import argparse
import mimetypes
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aimesh_cli.http import add_connection_arguments, client, problem


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ingest", help="Upload files or folders (recursively) into a collection"
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--collection", "-c", required=True, help="Target collection")
    parser.add_argument(
        "--poll-seconds", type=float, default=0.5, help="How often to ask for job progress"
    )
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


@dataclass
class Outcome:
    uploaded: dict[str, str] = field(default_factory=dict)  # file -> job id
    failed: dict[str, str] = field(default_factory=dict)  # file -> reason
    done: list[str] = field(default_factory=list)


def collect(paths: list[Path]) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """(file, name to send) for every file under ``paths`` (hidden ones in folders left
    out); and the paths that do not exist."""
    found: list[tuple[Path, str]] = []
    skipped: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if not file.name.startswith("."):
                    found.append((file, f"{path.name}/{file.relative_to(path).as_posix()}"))
        elif path.is_file():
            found.append((path, path.name))
        else:
            skipped[str(path)] = "no such file or directory"
    return found, skipped


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    files, skipped = collect(args.paths)
    outcome = Outcome(failed=dict(skipped))
    with client(args) as http, _progress(console) as progress:
        upload_task = progress.add_task("uploading", total=len(files))
        for path, name in files:
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            try:
                with path.open("rb") as handle:
                    response = http.post(
                        f"/v1/collections/{args.collection}/files",
                        files=[("files", (name, handle, kind))],
                    )
            except httpx.HTTPError as error:
                outcome.failed[name] = f"cannot reach the gateway: {error}"
            else:
                if response.status_code == 202:
                    outcome.uploaded[name] = response.json()["job_id"]
                else:
                    outcome.failed[name] = problem(response)
            progress.advance(upload_task)
        _follow(http, args, outcome, progress)
    _summary(console, outcome)
    return 0 if not outcome.failed else 1


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _follow(
    http: httpx.Client, args: argparse.Namespace, outcome: Outcome, progress: Progress
) -> None:
    """Poll every job until it finished, showing chunks embedded of the total."""
    chunks_task = progress.add_task("embedding chunks", total=None)
    pending = dict(outcome.uploaded)
    embedded: dict[str, tuple[int, int]] = {}
    while pending:
        for name, job_id in list(pending.items()):
            response = http.get(f"/v1/jobs/{job_id}")
            if response.status_code != 200:
                outcome.failed[name] = problem(response)
                del pending[name]
                continue
            job = response.json()
            embedded[name] = (job["progress"]["chunks_embedded"], job["progress"]["chunks_total"])
            if job["state"] == "succeeded":
                outcome.done.append(name)
                del pending[name]
            elif job["state"] == "failed":
                outcome.failed[name] = "; ".join(job["errors"]) or "job failed"
                del pending[name]
        progress.update(
            chunks_task,
            completed=sum(done for done, _ in embedded.values()),
            total=sum(total for _, total in embedded.values()) or None,
        )
        if pending:
            time.sleep(args.poll_seconds)


def _summary(console: Console, outcome: Outcome) -> None:
    console.print(f"ingested {len(outcome.done)} file(s); {len(outcome.failed)} failed")
    for name, reason in sorted(outcome.failed.items()):
        # One line per file, however long the reason (greppable).
        console.print(f"  FAILED {name}: {reason}", markup=False, highlight=False, soft_wrap=True)
    sys.stderr.flush()
