"""``aimesh search QUERY --collection C``: search a collection through the gateway."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from aimesh_cli.http import add_connection_arguments, client, problem


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("search", help="Search a collection")
    parser.add_argument("query")
    parser.add_argument("--collection", "-c", required=True)
    parser.add_argument("--top-k", "-k", type=int, default=5)
    parser.add_argument("--mode", choices=("dense", "bm25", "hybrid"), default="dense")
    parser.add_argument("--filter", type=_json_object, help='Metadata filter, e.g. {"lang":"en"}')
    parser.add_argument(
        "--rerank",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Rerank with the service's reranker (default: the collection's setting)",
    )
    parser.add_argument("--json", action="store_true", help="Print the raw JSON response")
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return parsed


def run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"query": args.query, "top_k": args.top_k, "mode": args.mode}
    if args.filter is not None:
        body["filter"] = args.filter
    if args.rerank is not None:
        body["rerank"] = args.rerank
    try:
        with client(args) as http:
            response = http.post(f"/v1/collections/{args.collection}/search", json=body)
    except httpx.HTTPError as error:
        print(f"aimesh search: cannot reach the gateway: {error}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"aimesh search: {problem(response)}", file=sys.stderr)
        return 1
    results = response.json()["results"]
    if args.json:
        print(json.dumps(response.json(), indent=2, ensure_ascii=False))
        return 0
    for rank, hit in enumerate(results, start=1):
        text = " ".join(hit["text"].split())
        print(f"{rank}. {hit['score']:.4f}  {hit['chunk_id']}")
        print(f"   {text[:200]}{'...' if len(text) > 200 else ''}")
    if not results:
        print("no results")
    return 0
