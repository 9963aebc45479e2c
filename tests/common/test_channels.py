"""Client channel targets: plain addresses resolve by DNS so round_robin sees every replica."""

from __future__ import annotations

import pytest

from aimesh_common.channels import target_for


@pytest.mark.parametrize(
    ("addr", "target"),
    [
        ("embedding:50051", "dns:///embedding:50051"),
        ("localhost:50051", "dns:///localhost:50051"),
        ("dns:///embedding:50051", "dns:///embedding:50051"),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_target_for(addr: str, target: str) -> None:
    assert target_for(addr) == target
