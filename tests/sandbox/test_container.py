"""The sandbox api in a real container: labelled like a compose service, logs on stdout,
restartable, and switched to Phase 2 code by a checkout plus a restart."""

from __future__ import annotations

import json
import subprocess

import aiodocker
import pytest

from sandbox.container import wait_healthy
from sandbox.migrate import migrate
from tests.fixtures.sandbox import SandboxApi, SandboxSeed
from tests.sandbox.helpers import get, give_key

pytestmark = pytest.mark.docker


async def log_events(container: aiodocker.containers.DockerContainer) -> list[dict[str, object]]:
    lines = "".join(await container.log(stdout=True, stderr=True)).splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def test_container_is_a_labelled_compose_service_without_healthcheck(
    sandbox_api: SandboxApi, docker: aiodocker.Docker
) -> None:
    container = await docker.containers.get(sandbox_api.container_id)
    labels = container["Config"]["Labels"]
    assert labels["com.docker.compose.project"] == sandbox_api.project
    assert labels["com.docker.compose.service"] == "api"
    assert container["Name"] == f"/{sandbox_api.project}-api-1"
    assert container["HostConfig"]["NetworkMode"] == "host"
    assert container["HostConfig"]["RestartPolicy"]["Name"] in ("no", "")
    assert "Healthcheck" not in container["Config"]
    code_dir = str(sandbox_api.code_dir)
    assert f"{code_dir}:{code_dir}:ro" in container["HostConfig"]["Binds"]
    assert container["State"]["Running"]


async def test_api_answers_own_rows_logs_failures_and_survives_restart(
    sandbox_api: SandboxApi, sandbox_seed: SandboxSeed, docker: aiodocker.Docker
) -> None:
    client = sandbox_seed.result.clients[0]
    url = f"{sandbox_api.base_url}/api/v1/sessions"
    status, body = await get(url, client.key)
    assert status == 200 and {s["id"] for s in body["sessions"]} == set(client.session_ids)
    status, body = await get(url, "not-a-key")
    assert status == 401 and body["error"]["code"] == "AUTHENTICATION_ERROR"

    container = await docker.containers.get(sandbox_api.container_id)
    events = await log_events(container)
    assert events[0]["event"] == "startup" and events[0]["phase"] == 3
    assert [e["event"] for e in events].count("ownership_check_failed") == 1
    logs = json.dumps(events)
    assert client.key not in logs and client.key_hash not in logs

    await container.restart(timeout=5)
    await wait_healthy(sandbox_api.base_url, 30)
    assert (await get(url, client.key))[0] == 200
    startups = [e for e in await log_events(container) if e["event"] == "startup"]
    assert len(startups) == 2


async def test_phase2_code_after_downgrade_checkout_and_restart(
    sandbox_api: SandboxApi, sandbox_seed: SandboxSeed, docker: aiodocker.Docker
) -> None:
    await migrate(sandbox_api.database_url, "20260201_000006", down=True)
    url = f"{sandbox_api.base_url}/api/v1/sessions"
    assert (await get(url, sandbox_seed.result.clients[0].key))[0] == 500  # Phase 3 code, old DB
    subprocess.run(["git", "checkout", "-q", "phase-2"], cwd=sandbox_api.code_dir, check=True)
    session_id = sandbox_seed.result.clients[1].session_ids[0]
    await give_key(sandbox_api.database_url, session_id, "phase-2-test-key")

    container = await docker.containers.get(sandbox_api.container_id)
    await container.restart(timeout=5)
    await wait_healthy(sandbox_api.base_url, 30)
    assert (await get(f"{sandbox_api.base_url}/health"))[1] == {"status": "ok", "phase": 2}
    status, body = await get(url, "phase-2-test-key")
    assert status == 200 and [s["id"] for s in body["sessions"]] == [session_id]
