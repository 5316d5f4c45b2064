"""Fixtures live in tests/fixtures/, one module per outside dependency."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.docker",
    "tests.fixtures.botdb",
    "tests.fixtures.slack",
    "tests.fixtures.sandbox",
    "tests.fixtures.smtp",
    "tests.fixtures.stuck_file",
    "tests.fixtures.redis",
    "tests.pagerwire.fixtures",
    "tests.fixtures.redis_cache",
]

# A test that uses one of these fixtures (directly or through another) carries the marker, so
# `pytest -m docker` lists exactly the tests a missing engine skips (scripts/test-env.sh says so).
MARKER_BY_FIXTURE = {"docker_host": "docker", "redis_url": "redis"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in MARKER_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker):
                item.add_marker(marker)
