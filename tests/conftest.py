"""Fixtures live in tests/fixtures/, one module per outside dependency."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.docker",
    "tests.fixtures.botdb",
    "tests.fixtures.slack",
    "tests.fixtures.sandbox",
    "tests.fixtures.smtp",
    "tests.fixtures.redis_cache",
]
