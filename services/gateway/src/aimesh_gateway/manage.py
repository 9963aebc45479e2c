"""``aimesh-gateway-manage``: server-side management of the gateway, run where its database is.

* ``migrate`` applies the database migrations and exits (``make migrate``);
* ``keys create|list|revoke`` manages API keys directly in the database, for any tenant:
  the bootstrap of the first key, before any admin credential exists (afterwards the admin
  API, ``/v1/admin/keys``, does the same over REST).

Both read the gateway's settings (``AIMESH_DATABASE_URL`` or ``AIMESH_DATA_DIR``) and apply
pending migrations first. A created key is printed once, on standard output, and never
stored in clear.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from aimesh_common.logging import configure_logging
from aimesh_common.settings import load_settings
from aimesh_gateway.auth.keys import KeyRecord, KeyStore
from aimesh_gateway.core.config import Settings
from aimesh_gateway.db.engine import create_engine, current_revision, migrate, session_factory
from aimesh_gateway.schemas.admin import TENANT_ID_PATTERN

T = TypeVar("T")
ROLES = ("admin", "editor", "user")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aimesh-gateway-manage",
        description="Server-side management of the aimesh gateway (direct database access).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    migrate_parser = commands.add_parser("migrate", help="Apply the database migrations")
    migrate_parser.set_defaults(func=_migrate)
    _register_keys(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func = cast(Callable[[argparse.Namespace], int], args.func)
    return func(args)


def _migrate(_args: argparse.Namespace) -> int:
    settings = load_settings(Settings)
    configure_logging("gateway", settings.log_level, settings.log_format)
    engine = create_engine(settings.resolved_database_url())

    async def run() -> None:
        try:
            await migrate(engine)
            print(f"database at revision {await current_revision(engine)}")
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


def _register_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="Manage API keys (direct database access)")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="Create a key and print it (shown once)")
    create.add_argument("--tenant", required=True, type=_tenant, help="Tenant of the key")
    create.add_argument(
        "--role", action="append", required=True, choices=ROLES, help="Role (repeatable)"
    )
    create.add_argument("--name", default="", help="A label for people")
    create.add_argument("--expires-in-days", type=float, help="Expire after this many days")
    create.add_argument("--rpm", type=int, help="Requests per minute (default: the server's)")
    create.add_argument("--tpm", type=int, help="Tokens per minute (default: the server's)")
    create.set_defaults(func=_create)

    listing = actions.add_parser("list", help="List the keys of a tenant (never the secrets)")
    listing.add_argument("--tenant", required=True, type=_tenant)
    listing.set_defaults(func=_list)

    revoke = actions.add_parser("revoke", help="Revoke a key by id")
    revoke.add_argument("--tenant", required=True, type=_tenant)
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_revoke)


def _tenant(value: str) -> str:
    if not re.match(TENANT_ID_PATTERN, value):
        raise argparse.ArgumentTypeError("1-64 characters of [A-Za-z0-9_-], starting alphanumeric")
    return value


def _with_store(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = load_settings(Settings)

    async def run() -> T:
        engine = create_engine(settings.resolved_database_url())
        try:
            await migrate(engine)
            return await action(KeyStore(session_factory(engine)))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _json(record: KeyRecord) -> dict[str, object]:
    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": record.id,
        "prefix": record.prefix,
        "tenant_id": record.tenant_id,
        "name": record.name,
        "roles": list(record.roles),
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "last_used_at": iso(record.last_used_at),
        "revoked_at": iso(record.revoked_at),
        "rpm": record.rpm,
        "tpm": record.tpm,
    }


def _create(args: argparse.Namespace) -> int:
    expires = (
        None
        if args.expires_in_days is None
        else datetime.now(UTC) + timedelta(days=args.expires_in_days)
    )
    created = _with_store(
        lambda store: store.create(
            tenant_id=args.tenant,
            roles=args.role,
            name=args.name,
            expires_at=expires,
            rpm=args.rpm,
            tpm=args.tpm,
        )
    )
    print(json.dumps({**_json(created.record), "key": created.key}, indent=2))
    print("store the key now: it is not shown again", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    records = _with_store(lambda store: store.list(args.tenant))
    print(json.dumps([_json(record) for record in records], indent=2))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    record = _with_store(lambda store: store.revoke(args.tenant, args.key_id))
    if record is None:
        print(f"no key {args.key_id!r} in tenant {args.tenant!r}", file=sys.stderr)
        return 1
    print(json.dumps(_json(record), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
