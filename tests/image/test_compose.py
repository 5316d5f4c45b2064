"""The deployment example, docker-compose.yml: it is a valid compose file with the documented
.env, and `up` brings the bot and its own PostgreSQL up, migrated, serving and ready."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml

from bot.rehearsal.postgres import free_port
from tests.fixtures.sandbox import SandboxSeed
from tests.image.conftest import REPO_ROOT, Completed, Container, docker, healthy, poll, run
from tests.slackwire.fake_web_api import FakeSlack
from tests.slackwire.requests import sign, slash_command

pytestmark = [pytest.mark.docker, pytest.mark.image, pytest.mark.compose]

HERE = Path(__file__).resolve().parent
STANDIN_IMAGE = "rollback-bot-test-postgres:17"
SECRET = "compose-test-signing-secret"


@pytest.fixture(scope="session")
def compose_cli(docker_host: str) -> tuple[str, ...]:
    """`docker compose` (v2) or `docker-compose` (v1, Debian bookworm's; v2 in trixie)."""
    for argv in (("docker", "compose"), ("docker-compose",)):
        if shutil.which(argv[0]) is None:
            continue
        found = subprocess.run([*argv, "version"], capture_output=True, text=True, check=False)
        if found.returncode == 0:
            return argv
    reason = "neither `docker compose` nor `docker-compose` is installed"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; scripts/test-env.sh installs Debian's docker-compose")
    pytest.skip(reason)


@dataclass
class Project:
    folder: Path
    cli: tuple[str, ...]
    name: str
    files: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # for the override's ${RB_TEST_…}

    async def compose(self, *args: str, within: float = 180.0) -> Completed:
        options = [option for f in self.files for option in ("-f", str(self.folder / f))]
        return await run(*self.cli, "-p", self.name, *options, *args, within=within,
                         cwd=self.folder, env=self.env)


def project_folder(tmp_path: Path, env_lines: list[str]) -> Path:
    """The example as a deployer has it: docker-compose.yml beside a .env made from
    .env.example (its defaults, then the values this deployment sets)."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "docker-compose.yml", folder / "docker-compose.yml")
    shutil.copy(REPO_ROOT / "docker-compose.replicas.yml", folder / "docker-compose.replicas.yml")
    shutil.copy(HERE / "compose.host-network.yml", folder / "compose.host-network.yml")
    example = (REPO_ROOT / ".env.example").read_text()
    (folder / ".env").write_text(example + "\n" + "\n".join(env_lines) + "\n")
    return folder


async def test_the_example_with_the_documented_env_is_a_valid_compose_file(
    compose_cli: tuple[str, ...], tmp_path: Path,
) -> None:
    folder = project_folder(tmp_path, ["BOT_DB_PASSWORD=s3cret", "DOCKER_GID=999"])
    project = Project(folder, compose_cli, "rbtconfig", ("docker-compose.yml",))
    shown = await project.compose("config")
    assert shown.code == 0, shown.output
    config = yaml.safe_load(shown.output)
    assert set(config["services"]) == {"db", "migrate", "bot"}
    assert set(config["volumes"]) == {"pgdata", "backups", "outbox"}
    bot = config["services"]["bot"]
    env = bot["environment"]
    assert env["DATABASE_URL"] == "postgresql://rollback_bot:s3cret@db:5432/rollback_bot"
    assert env["BACKUP_DIR"] == "/var/lib/rollback-bot/backups"  # the volume, not .env's
    assert env["SLACK_BOT_TOKEN"] == "", "a comment in .env.example was read as a value"
    assert env["ROLLBACK_CHANNEL"] == "oncall-engineering"
    targets = {str(v["target"] if isinstance(v, dict) else v.split(":")[1])
               for v in bot["volumes"]}
    assert {"/var/lib/rollback-bot/backups", "/var/lib/rollback-bot/outbox"} <= targets

    missing = folder / ".env"
    missing.write_text(missing.read_text().replace("BOT_DB_PASSWORD=s3cret", ""))
    refused = await project.compose("config")
    assert refused.code != 0 and "BOT_DB_PASSWORD" in refused.output


async def test_the_two_replica_example_serves_http_probes_ready_and_drains_in_time(
    compose_cli: tuple[str, ...], tmp_path: Path,
) -> None:
    folder = project_folder(tmp_path, ["BOT_DB_PASSWORD=s3cret", "DOCKER_GID=999"])
    project = Project(folder, compose_cli, "rbtreplicas",
                      ("docker-compose.yml", "docker-compose.replicas.yml"))
    shown = await project.compose("config")
    assert shown.code == 0, shown.output
    config = yaml.safe_load(shown.output)
    assert set(config["services"]) == {"db", "migrate", "bot"}
    bot = config["services"]["bot"]
    assert bot["scale"] == 2
    assert bot["command"] == ["serve", "--http"]
    assert bot["healthcheck"]["test"][-1] == "--ready"
    assert bot["environment"]["DATABASE_URL"] == \
        "postgresql://rollback_bot:s3cret@db:5432/rollback_bot", "both on the one bot database"
    shutdown = float(bot["environment"]["SHUTDOWN_SECONDS"])
    grace = bot["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > shutdown + 2, \
        "docker stop waits longer than the bot's drain"


@pytest.fixture(scope="session")
async def standin_postgres_image(bot_image: str) -> str:
    """The official postgres image's stand-in (no registry here), on the bot's base image."""
    built = await run("docker", "build", "--network", "host", "-t", STANDIN_IMAGE,
                      str(HERE / "postgres-standin"), within=600)
    assert built.code == 0, built.output[-3000:]
    return STANDIN_IMAGE


@pytest.fixture
async def deployed(
    compose_cli: tuple[str, ...], bot_image: str, standin_postgres_image: str, docker_host: str,
    tmp_path: Path, target_db_url: str, sandbox_seed: SandboxSeed, fake_slack: FakeSlack,
    api_health: str,
) -> AsyncIterator[tuple[Project, int]]:
    socket = docker_host.removeprefix("unix://")
    bot_port = free_port()
    project = Project(
        project_folder(tmp_path, [
            "BOT_DB_PASSWORD=compose-test-password", f"DOCKER_GID={os.stat(socket).st_gid}",
            f"DOCKER_SOCKET={socket}", f"ROLLBACK_BOT_IMAGE={bot_image}",
            f"POSTGRES_IMAGE={standin_postgres_image}",
            "SLACK_BOT_TOKEN=xoxb-compose-test", f"SLACK_SIGNING_SECRET={SECRET}",
            f"SLACK_API_URL={fake_slack.url}", "APPROVER_USER_IDS=U_ALICE,U_BOB",
            f"TARGET_DATABASE_URL={target_db_url}", "MAILER=outbox",
            "CLIENT_DIRECTORY=/etc/rollback-bot/clients.csv", f"API_BASE_URL={api_health}",
            # The restart step would find the api by its compose labels: here, this project's
            # db container stands in for it, through the mounted Docker socket.
            "RESTART_STRATEGY=docker", "API_COMPOSE_SERVICE=db",
        ]),
        compose_cli, f"rbt{uuid.uuid4().hex[:8]}",
        ("docker-compose.yml", "compose.host-network.yml"),
        {"RB_TEST_DB_PORT": str(free_port()), "RB_TEST_BOT_PORT": str(bot_port),
         "RB_TEST_CLIENTS_CSV": str(sandbox_seed.directory_csv)})
    project.folder.joinpath(".env").write_text(
        project.folder.joinpath(".env").read_text() + f"API_COMPOSE_PROJECT={project.name}\n")
    try:
        up = await project.compose("up", "-d", "--no-build", within=300)
        assert up.code == 0, up.output[-4000:]
        yield project, bot_port
    finally:
        logs = await project.compose("logs", "--no-color")
        down = await project.compose("down", "-v", "--remove-orphans")
        print(logs.output[-6000:])
        assert down.code == 0, down.output


async def service_container(project: Project, service: str) -> Container:
    found = await project.compose("ps", "-q", service)
    assert found.code == 0 and found.output.strip(), found.output
    return Container(found.output.strip().splitlines()[-1])


async def test_up_migrates_then_serves_healthy_and_its_check_is_ready(
    deployed: tuple[Project, int], fake_slack: FakeSlack,
) -> None:
    project, bot_port = deployed
    started = time.monotonic()
    bot = await service_container(project, "bot")
    await poll(lambda: healthy(bot), 120, "the bot's container reported healthy")
    print(f"compose up to healthy in {time.monotonic() - started:.1f} s")

    migrate = await service_container(project, "migrate")
    exited = await docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                          migrate.name)
    assert exited.output.strip() == "exited 0"
    assert "bot database at revision" in await migrate.logs()

    checked = await project.compose("exec", "-T", "bot", "rollback-bot", "check")
    assert checked.code == 0, checked.output
    lines = checked.output.splitlines()
    assert "Ready: nothing here would stop a rollback." in lines
    bot_db = next(line for line in lines if line.startswith("ok      bot database:"))
    assert "rollback_bot" in bot_db and "compose-test-password" not in checked.output
    docker_line = next(line for line in lines if line.startswith("ok      docker:"))
    assert "1 running api container(s)" in docker_line
    assert any(line.startswith("ok      backup dir: /var/lib/rollback-bot/backups")
               for line in lines)

    volumes = await docker("volume", "ls", "-q", "--filter",
                           f"label=com.docker.compose.project={project.name}")
    assert {v.removeprefix(f"{project.name}_") for v in volumes.output.split()} \
        >= {"pgdata", "backups", "outbox"}

    body = slash_command("help", "U_ALICE", "C_ONCALL", "oncall-engineering")
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{bot_port}/slack/events", data=body, headers=sign(body, SECRET),
    ) as answer:
        assert answer.status == 200
        assert "/rollback-phase3" in await answer.text()  # help is the ack itself
