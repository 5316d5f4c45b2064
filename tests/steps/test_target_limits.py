"""Each target's connections carry its own lock and statement timeouts, in one process serving
several targets (`target_db.configure` per target): production's 2 s lock timeout is not
staging's 7 s, and a target nobody configured gets the defaults."""

from __future__ import annotations

from steps import target_db
from tests.fixtures.postgres import DatabaseFactory
from tests.steps.step_context import settings_for


async def test_each_targets_connections_carry_its_own_timeouts(databases: DatabaseFactory
                                                               ) -> None:
    staging_url, production_url, other_url = [
        await databases.create(name) for name in ("limits_staging", "limits_production",
                                                  "limits_other")]
    staging = settings_for(target_database_url=staging_url, target_lock_timeout_seconds=7,
                           target_statement_timeout_seconds=60).for_target("staging")
    production = settings_for(target_database_url=production_url,
                              target_lock_timeout_seconds=2,
                              target_statement_timeout_seconds=30).for_target("production")
    for settings in (staging, production):
        target_db.configure(settings)
    seen = {}
    for name, url in (("staging", staging_url), ("production", production_url),
                      ("other", other_url)):
        async with target_db.connect(url) as conn:
            seen[name] = (await conn.fetchval("SHOW lock_timeout"),
                          await conn.fetchval("SHOW statement_timeout"))
    assert seen == {"staging": ("7s", "1min"), "production": ("2s", "30s"),
                    "other": ("5s", "15min")}
