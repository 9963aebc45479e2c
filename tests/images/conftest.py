"""tests/images runs only when asked for: ``pytest -m images`` (``make test-images``).

The tests need the images built (``make images``) and a container engine; they are left
out of ``make test`` (no ``-m``) and of any ``-m`` expression that does not name
``images``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "images" in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("images")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("images")]
