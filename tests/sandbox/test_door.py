"""The sandbox api's door-key mode, as the real service's auth middleware behaves: one key for
every request but /health, read from the env file at start (the process environment wins)."""

from __future__ import annotations

from pathlib import Path

from sandbox.door import parse_env_file
from sandbox.seed import write_env_file
from tests.fixtures.sandbox import SandboxSeed
from tests.steps.service_api import get, local_service_api


def test_env_file_parsed_as_dotenv_reads_it() -> None:
    assert parse_env_file('# c\nexport API_KEY="k 1"\nDEBUG=true # on\nBAD LINE\nX=\n') == {
        "API_KEY": "k 1", "DEBUG": "true", "X": ""}


async def test_the_door_refuses_every_key_but_the_one_in_its_env_file(
    target_db_url: str, sandbox_seed: SandboxSeed, tmp_path: Path,
) -> None:
    owner = sandbox_seed.result.clients[0]
    env = tmp_path / ".env"
    write_env_file(env, owner.key)
    other = sandbox_seed.result.clients[1]
    async with local_service_api(tmp_path / "api", target_db_url, phase=3,
                                 env_file=env) as api:
        assert (await get(api.base_url, "/health", None))[0] == 200
        status, body = await get(api.base_url, "/api/v1/sessions", None)
        assert status == 401 and body["error"]["message"] == "Missing API key"
        status, body = await get(api.base_url, "/api/v1/sessions", other.key)
        assert status == 401 and body["error"] == {"code": "AUTHENTICATION_ERROR",
                                                   "message": "Invalid API key"}
        status, body = await get(api.base_url, "/api/v1/sessions", owner.key)
        assert status == 200 and body["total"] == 3, "past the door, rows by the key's hash"
        write_env_file(env, other.key)  # read at start only
        assert (await get(api.base_url, "/api/v1/sessions", other.key))[0] == 401
