"""The rate-limit script against a Redis started by testcontainers, where a Docker engine runs.

This machine has only the Docker client, so the test skips with that reason; the same
script is tested against the real Redis on 127.0.0.1:6379 in test_ratelimit.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from aimesh_gateway.limits.ratelimit import Bucket, RedisBuckets


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(
        not _docker_engine_answers(),
        reason="no Docker engine answers here: testcontainers cannot start Redis",
    ),
]


@pytest.fixture
async def container_redis() -> AsyncIterator[Redis]:
    from testcontainers.redis import RedisContainer

    with RedisContainer() as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        redis = Redis.from_url(f"redis://{host}:{port}/0")
        yield redis
        await redis.aclose()


async def test_gcra_on_a_redis_container_admits_exactly_the_limit(container_redis: Redis) -> None:
    buckets = RedisBuckets(container_redis)
    results = [await buckets.run("check", [Bucket("container:k", 10, 1)]) for _ in range(15)]
    assert sum(result.allowed for result in results) == 10
