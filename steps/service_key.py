"""Step 4 for the service as it really is: one door key, and caches that remember old hashes.

The real service refuses at its door every request whose key is not its one `API_KEY`, and only
then filters rows by the key's hash. Rewriting the hashes alone would leave the new key refused
at the door and the old key (still `API_KEY`) owning nothing: an outage made by the rollback.
So with `KEY_MODEL=service`, once the rows carry their new keys, the new key of the service's
hash is installed where the service reads it (`steps.key_installers`), the api is restarted the
way step 3 restarted it (`steps.restart.restart_api`), and the door is asked whether it now lets
the new key in — all before step 5 mails anything. In both models the Redis caches are then
cleared of entries holding old hashes (`steps.cache_invalidation`).

This wraps the rotation step (`steps.registry` builds it around `RotateKeysStep`), so the
rotation itself stays one idea in one module. `KeyModelNotes` adds to the plans of steps 3, 5
and 6 what the service model changes for them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.domain.resend import Resender
from bot.domain.step_protocol import (
    CheckResult,
    LeavesWorkBehind,
    Outcome,
    OutputSink,
    Plan,
    Step,
    StepContext,
    StepError,
)
from bot.settings import KeyModel, Settings
from steps.cache_invalidation import invalidate_old_hashes, plan_lines, stale_entry_count
from steps.http_probe import HttpProbe, join_url
from steps.key_installers import (
    DoorKey,
    install_door_key,
    install_target,
    installer_refusal,
    sha256_hex,
)
from steps.restart import restart_api
from steps.target_db import connect
from steps.target_sql import KEY_OF_HASH_SQL, OWNER_HASHES_SQL, rekey_late_rows_sql

SESSIONS_PATH = "/api/v1/sessions"
PREFIX = 8
TABLES = ("sessions", "assistants")


def service_mode(settings: Settings) -> bool:
    return settings.key_model is KeyModel.SERVICE


async def old_hashes(ctx: StepContext) -> list[str]:
    """The clients' old hashes: those recorded by this run, and those still on rows."""
    mapping = await ctx.rotations.mapping(ctx.rotation_id)
    async with connect(ctx.settings.target_database_url.get_secret_value()) as conn:
        on_rows = {r["hash"] for r in await conn.fetch(OWNER_HASHES_SQL)}
    return sorted(set(mapping) | (on_rows - set(mapping.values())))


def choose_service_hash(settings: Settings, olds: Collection[str]) -> str:
    """The old hash whose new key becomes the door key, or StepError saying why none is."""
    wanted = settings.service_key_old_hash.strip().lower()
    listed = ", ".join(h[:PREFIX] for h in sorted(olds))
    if wanted:
        matches = [h for h in olds if h.startswith(wanted)] if len(wanted) >= PREFIX else []
        if len(matches) == 1:
            return matches[0]
        raise StepError(f"SERVICE_KEY_OLD_HASH {wanted[:16]!r} matches "
                        f"{'none' if not matches else 'several'} of the old hashes ({listed}); "
                        f"give at least {PREFIX} hex characters of one of them")
    if len(olds) == 1:
        return next(iter(olds))
    if not olds:
        raise StepError("KEY_MODEL=service: no row carries a key hash, so there is no door key "
                        "to replace")
    raise StepError(f"KEY_MODEL=service installs ONE door key, but the rows carry {len(olds)} "
                    f"old hashes ({listed}): set SERVICE_KEY_OLD_HASH to the one of the "
                    f"service's current API_KEY (`check` names it); the others' rows get keys "
                    f"of their own that the door refuses, as it refused their old ones")


def mailable(settings: Settings, mapping: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """For step 5: the clients whose new key passes the door, and the old hashes left out.

    In `service` mode only the door key's hash qualifies (mailing another key would hand people
    a key the service refuses); with one old hash that is all of them."""
    if not service_mode(settings) or len(mapping) <= 1:
        return dict(mapping), []
    chosen = choose_service_hash(settings, mapping)
    return {chosen: mapping[chosen]}, sorted(h for h in mapping if h != chosen)


async def read_door_key(settings: Settings, new_hash: str) -> DoorKey:
    async with connect(settings.target_database_url.get_secret_value()) as conn:
        value = await conn.fetchval(KEY_OF_HASH_SQL, new_hash)
    if value is None or sha256_hex(value) != new_hash:
        raise StepError(f"the new key of hash {new_hash[:PREFIX]} is on no target row")
    return DoorKey(value, new_hash)


async def rekey_late_rows(settings: Settings, old_hash: str, new_hash: str) -> int:
    """Until its restart the api still let the old door key in, and every row it wrote then
    (after the rotation's sweep) carries the old key: owned by a key nobody will be mailed.
    Once the door knows only the new key nothing can write under the old one: re-key them."""
    async with connect(settings.target_database_url.get_secret_value()) as conn:
        updated = 0
        for table in TABLES:
            status = await conn.execute(rekey_late_rows_sql(table), old_hash, new_hash)
            updated += int(status.split()[-1])
    return updated


async def door_status(settings: Settings, key: DoorKey) -> int | None:
    """What the api answers `GET /api/v1/sessions` with this key (None: no answer)."""
    async with HttpProbe(timeout_seconds=15) as http:
        answer = await http.get(join_url(settings.api_base_url, SESSIONS_PATH),
                                headers={"X-API-Key": key.value})
    return answer.status


def _service_plan_lines(s: Settings, olds: list[str]) -> tuple[list[str], list[str], str]:
    """Details, warnings and the chosen hash's prefix for the plan of step 4."""
    try:
        chosen = choose_service_hash(s, olds)
    except StepError as exc:
        return ([f"KEY_MODEL=service: {len(olds)} old hash(es); the step refuses to start"],
                [str(exc)], "")
    others = len(olds) - 1
    lines = [f"KEY_MODEL=service: {len(olds)} old hash(es); the new key of {chosen[:PREFIX]} "
             f"becomes the service's door key" + (f" ({others} other hash(es) get keys of "
                                                  f"their own, refused at the door and not "
                                                  f"mailed)" if others else ""),
             f"then install it into {install_target(s)} (the value is never shown), restart "
             f"the api again by {s.restart_strategy.value} as in step 3, wait for health, and "
             f"check that the door lets the new key in: before step 5 mails anyone"]
    return lines, [], chosen[:PREFIX]


class KeyModelRotation:
    """Step 4: the rotation, then (service model) the door key, then the caches."""

    def __init__(self, rotation: Step) -> None:
        self.rotation = rotation
        self.name = rotation.name

    async def plan(self, ctx: StepContext) -> Plan:
        s = ctx.settings
        plan = await self.rotation.plan(ctx)
        facts: dict[str, Any] = {**plan.facts, "key_model": s.key_model.value,
                                 "redis": s.redis_url is not None}
        details, warnings = list(plan.details), list(plan.warnings)
        summary = plan.summary
        if service_mode(s):
            lines, problems, chosen = _service_plan_lines(s, await old_hashes(ctx))
            details += lines
            warnings += problems
            refusal = installer_refusal(s)
            if refusal is not None:
                warnings.append(f"the key installer refuses: {refusal}")
            facts.update({"door_key_of": chosen, "installer": s.key_installer.value,
                          "install_to": install_target(s)})
            summary += "; then the new door key installed and the api restarted"
        details += plan_lines(s)
        return dataclasses.replace(plan, summary=summary, facts=facts, details=tuple(details),
                                   warnings=tuple(warnings))

    async def left_behind(self, ctx: StepContext) -> tuple[str, ...]:
        """What a stop leaves of the rotation (the door key and caches leave nothing to tell)."""
        if isinstance(self.rotation, LeavesWorkBehind):
            return await self.rotation.left_behind(ctx)
        return ()

    async def check(self, ctx: StepContext) -> CheckResult:
        done = await self.rotation.check(ctx)
        if not done.done:
            return done
        s = ctx.settings
        mapping = await ctx.rotations.mapping(ctx.rotation_id)
        if not mapping:
            return done
        reasons = [done.reason]
        if service_mode(s):
            chosen = choose_service_hash(s, mapping)
            key = await read_door_key(s, mapping[chosen])
            status = await door_status(s, key)
            if status != 200:
                return CheckResult(False, f"{done.reason}, but the service's door answers the "
                                          f"new key with {status or 'nothing'}: the key is not "
                                          f"installed or the api not restarted (Retry does both)")
            reasons.append("the service's door lets the new key in")
        try:
            stale = await stale_entry_count(s, mapping)
        except StepError as exc:
            return CheckResult(False, f"{done.reason}; the cache cannot be checked: {exc}")
        if stale:
            return CheckResult(False, f"{done.reason}, but {stale:,} Redis entries still hold "
                                      f"old hashes (Retry clears them)")
        if stale is not None:
            reasons.append("no Redis entry holds an old hash")
        return CheckResult(True, "; ".join(reasons))

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        s = ctx.settings
        if service_mode(s):  # refuse before any row changes, before any key exists
            choose_service_hash(s, await old_hashes(ctx))
            refusal = installer_refusal(s)
            if refusal is not None:
                raise StepError(f"{refusal}; no key was generated, no row changed")
        outcome = await self.rotation.run(ctx, emit)
        facts, summary = dict(outcome.facts), outcome.summary
        mapping = await ctx.rotations.mapping(ctx.rotation_id)
        facts["key_model"] = s.key_model.value
        door: DoorKey | None = None
        if service_mode(s) and mapping:
            door, service = await self._install_and_restart(ctx, mapping, emit)
            facts.update(service)
            summary += (f"; new door key ({service['service_key']['new_hash']}) installed in "
                        f"{service['service_key'].get('file') or 'by command'}; api restarted, "
                        f"healthy after {service['service_restart']['healthy_after_s']} s")
            late = await rekey_late_rows(s, choose_service_hash(s, mapping), door.hash)
            facts["late_rows_rekeyed"] = late
            if late:
                emit(f"{late:,} row{'' if late == 1 else 's'} written with the old door key "
                     f"after the sweep, before the restart, re-keyed")
        # After the restart: from then on the old key is refused at the door, so nothing
        # re-caches an old hash; and before the door is tried, so that try reads fresh rows.
        cache = await invalidate_old_hashes(s, mapping, emit)
        facts["cache"] = cache
        if "skipped" in cache:
            summary += "; Redis cache not touched (REDIS_URL empty)"
        else:
            summary += (f"; Redis: {cache['owner_keys_removed']:,} owner indexes and "
                        f"{cache['sessions_removed']:,} cached sessions removed")
        if door is not None:
            status = await door_status(s, door)
            if status != 200:
                raise StepError(f"after the restart the service's door answers the new key "
                                f"with {status or 'nothing'}, not 200: it does not read "
                                f"{install_target(s)} (does its process environment set "
                                f"{s.service_env_variable}? `rollback-bot check` says); "
                                f"nobody has been mailed")
            emit(f"the door lets the new key in (GET {SESSIONS_PATH} answered 200)")
        return Outcome(summary=summary, facts=facts)

    async def _install_and_restart(self, ctx: StepContext, mapping: Mapping[str, str],
                                   emit: OutputSink) -> tuple[DoorKey, dict[str, Any]]:
        s = ctx.settings
        chosen = choose_service_hash(s, mapping)
        key = await read_door_key(s, mapping[chosen])
        installed = await install_door_key(s, key, ctx.run_id, emit)
        emit(f"restarting the api again ({s.restart_strategy.value}) so it reads the new "
             f"{s.service_env_variable}")
        restarted = await restart_api(s, emit)
        restarted["healthy_at"] = datetime.now(UTC).isoformat()
        return key, {"service_key": {**installed, "for_old_hash": chosen[:PREFIX],
                                     "new_hash": mapping[chosen][:PREFIX]},
                     "service_restart": restarted}


NoteLines = Callable[[Settings], list[str]]


def restart_notes(s: Settings) -> list[str]:
    return [f"KEY_MODEL=service: step 4 installs the new door key into {install_target(s)} "
            f"and restarts the api again the same way"]


def email_notes(s: Settings) -> list[str]:
    return ["KEY_MODEL=service: every contact listed under the door key's old hash is mailed "
            "the one new door key, once each; contacts of other hashes are not mailed (the "
            "door would refuse their keys)"]


def verify_notes(s: Settings) -> list[str]:
    return ["KEY_MODEL=service: the new door key must pass the door and see its rows; a random "
            "key must be refused at the door (401)"]


class KeyModelNotes:
    """Another step, its plan telling what `KEY_MODEL=service` changes for it."""

    def __init__(self, step: Step, notes: NoteLines) -> None:
        self.step = step
        self.name = step.name
        self.notes = notes

    async def plan(self, ctx: StepContext) -> Plan:
        plan = await self.step.plan(ctx)
        if not service_mode(ctx.settings):
            return plan
        return dataclasses.replace(
            plan, facts={**plan.facts, "key_model": ctx.settings.key_model.value},
            details=(*plan.details, *self.notes(ctx.settings)))

    async def check(self, ctx: StepContext) -> CheckResult:
        return await self.step.check(ctx)

    async def run(self, ctx: StepContext, emit: OutputSink) -> Outcome:
        return await self.step.run(ctx, emit)

    async def resend(self, ctx: StepContext, emit: OutputSink, clients: Sequence[str]
                     ) -> Outcome:
        """Step 5's resend, passed through (no other step has one)."""
        if not isinstance(self.step, Resender):
            raise StepError(f"step {self.name} cannot resend")
        return await self.step.resend(ctx, emit, clients)
