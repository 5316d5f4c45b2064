"""The env-file installer opens no file of ours through a link: links planted at the names it
used to write (predictable, from the run id), at names matching its kept copy, and at the very
names it is about to draw leave their victims untouched and `.env` a regular file holding the
new key. A `.env` that is a link, or a folder others may write to, is refused before any key
exists."""

from __future__ import annotations

import os
import random
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from bot.domain.step_protocol import StepError
from bot.preflight.door_key import check_installer
from sandbox.seed import write_env_file
from steps.key_installers import env_file_value, install_in_env_file
from steps.rotate_keys import RotateKeysStep
from steps.service_key import KeyModelRotation
from tests.steps.step_context import settings_for, step_context
from tests.steps.test_service_key import DoorSandbox, _rows, door_key, door_sandbox

__all__ = ["door_sandbox"]

VICTIM_TEXT = "root:x:0:0:victim, must never change\n"


def service_folder(tmp_path: Path) -> tuple[Path, Path]:
    """The service's folder (0755, as /srv/claude-agent-api) with its .env, and a victim file
    elsewhere that a planted link points to."""
    folder = tmp_path / "service"
    env = folder / ".env"
    write_env_file(env, "old-door-key")
    folder.chmod(0o755)
    victim = tmp_path / "victim"
    victim.write_text(VICTIM_TEXT)
    return env, victim


def assert_installed(env: Path, victim: Path, key_value: str) -> None:
    assert victim.read_text() == VICTIM_TEXT, "a planted link was written through"
    assert stat.S_ISREG(os.lstat(env).st_mode), ".env was turned into a link"
    assert env_file_value(env.read_text(), "API_KEY") == key_value


def test_links_at_the_old_predictable_names_are_not_followed(tmp_path: Path) -> None:
    env, victim = service_folder(tmp_path)
    run_id = str(uuid.uuid4())
    planted = [env.with_name(f"..env.rollback-bot-{run_id[:8]}.partial"),
               env.with_name(f".env.before-rollback-{run_id[:8]}"),
               env.with_name(f".env.before-rollback-{run_id[:8]}-planted")]  # the kept prefix
    for link in planted:
        link.symlink_to(victim)
    key = door_key(str(uuid.uuid4()))

    facts = install_in_env_file(env, "API_KEY", key, run_id)

    assert_installed(env, victim, key.value)
    kept = Path(facts["previous_kept_as"])
    assert kept not in planted and stat.S_ISREG(os.lstat(kept).st_mode)
    assert "API_KEY=old-door-key" in kept.read_text()
    assert all(link.is_symlink() and link.resolve() == victim for link in planted)
    again = door_key(str(uuid.uuid4()))  # a Retry adopts the kept copy, never a planted link
    assert install_in_env_file(env, "API_KEY", again, run_id)["previous_kept_as"] == str(kept)
    assert_installed(env, victim, again.value)


def test_links_at_the_names_about_to_be_drawn_are_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An attacker who guessed the random names: tempfile's name source is seeded here so the
    test knows them too, and plants a link at each before the installer runs."""
    env, victim = service_folder(tmp_path)
    run_id = str(uuid.uuid4())
    drawn = tempfile._RandomNameSequence()
    drawn._rng, drawn._rng_pid = random.Random(27), os.getpid()  # type: ignore[attr-defined]
    monkeypatch.setattr(tempfile, "_name_sequence", drawn)
    twin = random.Random(27)
    guessed = ["".join(twin.choices(drawn.characters, k=8)) for _ in range(6)]
    for name in guessed:
        env.with_name(f".env.before-rollback-{run_id[:8]}-{name}").symlink_to(victim)
        env.with_name(f"..env.rollback-bot-{name}.partial").symlink_to(victim)
    key = door_key(str(uuid.uuid4()))

    facts = install_in_env_file(env, "API_KEY", key, run_id)

    assert_installed(env, victim, key.value)
    kept = Path(facts["previous_kept_as"])
    assert stat.S_ISREG(os.lstat(kept).st_mode) and not any(n in kept.name for n in guessed)
    links = [p for p in env.parent.iterdir() if p.is_symlink()]
    assert len(links) == 2 * len(guessed), "a planted link was replaced"


def test_an_env_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    env, _ = service_folder(tmp_path)
    real = env.with_name("real.env")
    env.rename(real)
    env.symlink_to(real)
    before = real.read_text()
    with pytest.raises(StepError, match="is a symbolic link"):
        install_in_env_file(env, "API_KEY", door_key("k" * 36), str(uuid.uuid4()))
    assert real.read_text() == before and env.is_symlink()
    line = check_installer(settings_for(key_model="service", service_env_file=env))
    assert not line.ok and "symbolic link" in line.detail


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_folder_others_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    env, _ = service_folder(tmp_path)
    env.parent.chmod(mode)
    before = env.read_text()
    with pytest.raises(StepError, match="writable by others than its owner"):
        install_in_env_file(env, "API_KEY", door_key("k" * 36), str(uuid.uuid4()))
    assert env.read_text() == before
    assert sorted(p.name for p in env.parent.iterdir()) == [".env"], "a file was created"


@pytest.mark.parametrize("unsafe", ["link", "folder"])
async def test_step_4_refuses_before_any_key_is_generated(
    door_sandbox: DoorSandbox, tmp_path: Path, unsafe: str,
) -> None:
    box = door_sandbox
    if unsafe == "link":
        real = box.env_file.with_name("real.env")
        box.env_file.rename(real)
        box.env_file.symlink_to(real)
    else:
        box.env_file.parent.chmod(0o777)
    step = KeyModelRotation(RotateKeysStep())
    ctx = step_context(box.settings)
    plan = await step.plan(ctx)
    assert any("the key installer refuses" in w for w in plan.warnings)
    with pytest.raises(StepError, match="no key was generated"):
        await step.run(ctx, lambda line: None)
    assert (await _rows(box.url))[1] == {None}, "a row was re-keyed"
    assert await ctx.rotations.mapping(ctx.rotation_id) == {}
