"""`swarmpy stack ...` on a one-node cluster, with the repository's docker-compose.test.yml and
small files written by the tests: what the user sees in the CLI, the API and on the engine."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from swarmtest import running_tasks

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEST_STACK = str(ROOT / "docker-compose.test.yml")


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _stack_env(cluster, **extra) -> None:
    cluster.env = dict(cluster.env, TEST_IMAGE=cluster.image, **extra)


def test_deploy_the_test_stack_and_see_it_converge(cluster):
    _stack_env(cluster, GREETING="bonjour")
    out = cluster.ok("stack", "deploy", "-c", TEST_STACK, "--detach=false", "e2e", timeout=120)
    assert out.splitlines()[:6] == ["Creating network e2e_back", "Creating network e2e_default",
                                    "Creating secret e2e_db_password", "Creating config e2e_web_conf",
                                    "Creating service e2e_agent", "Creating service e2e_web"], out
    assert "verify: Service e2e_web converged" in out and "verify: Service e2e_agent converged" in out, out
    assert "e2e_web: 2/2 running" in out, out

    rows = [line.split() for line in cluster.ok("stack", "ls").splitlines()[1:]]
    assert ["e2e", "2"] in rows, rows
    services = {r.split()[1]: r.split() for r in cluster.ok("stack", "services", "e2e").splitlines()[1:]}
    assert services["e2e_web"][2:4] == ["replicated", "2/2"], services
    assert services["e2e_agent"][2:4] == ["global", "1/1"], services
    assert len(cluster.ok("stack", "ps", "-q", "-f", "desired-state=running", "e2e").split()) == 3

    web = cluster.service("e2e_web")
    assert web["spec"]["labels"] == {"com.example.role": "web", "com.docker.stack.namespace": "e2e",
                                     "com.docker.stack.image": cluster.image}
    container = cluster.containers("e2e_web")[0]
    attrs = cluster.docker.api.inspect_container(container.id)
    assert "GREETING=bonjour" in attrs["Config"]["Env"]
    assert attrs["Config"]["Labels"]["tier"] == "front"
    assert attrs["Config"]["Labels"]["com.docker.stack.namespace"] == "e2e"
    assert attrs["Config"]["Hostname"] == "web-host"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/data"]["Name"] == "e2e_data"
    volume = cluster.docker.api.inspect_volume("e2e_data")
    assert volume["Labels"] == {"com.example.volume": "data", "com.docker.stack.namespace": "e2e"}
    page = cluster.docker.api.exec_create(container.id, ["busybox", "wget", "-q", "-O", "-",
                                                            "http://127.0.0.1:8080/"])
    assert cluster.docker.api.exec_start(page["Id"]).decode().strip() == "bonjour"
    for path, content in (("/run/secrets/db_password", "e2e-db-password\n"), ("/etc/web.conf", None)):
        run = cluster.docker.api.exec_create(container.id, ["cat", path])
        got = cluster.docker.api.exec_start(run["Id"]).decode()
        assert got == (content or (ROOT / "tests/e2e/web.conf").read_text()), (path, got)
    stat = cluster.docker.api.exec_create(container.id, ["busybox", "stat", "-c", "%a", "/run/secrets/db_password"])
    assert cluster.docker.api.exec_start(stat["Id"]).decode().strip() == "400"

    # A redeploy of the same files changes nothing: no update, the same tasks.
    before = {t["id"] for t in running_tasks(cluster.tasks("e2e_web"))}
    out = cluster.ok("stack", "deploy", "-c", TEST_STACK, "e2e")
    assert "Updating" not in out and "Creating" not in out, out
    assert {t["id"] for t in running_tasks(cluster.tasks("e2e_web"))} == before

    removed = cluster.ok("stack", "rm", "e2e")
    assert removed.splitlines() == ["Removing service e2e_agent", "Removing service e2e_web",
                                    "Removing secret e2e_db_password", "Removing config e2e_web_conf",
                                    "Removing network e2e_back", "Removing network e2e_default"]
    cluster.wait_for(lambda: not cluster.containers("e2e_web", all=True)
                     and not cluster.containers("e2e_agent", all=True), timeout=30)
    assert "e2e" not in cluster.ok("stack", "ls")
    cluster.docker.api.remove_volume("e2e_data")


def test_redeploy_changes_only_what_changed_and_prune_removes_what_left(cluster, tmp_path):
    base = _write(tmp_path, "base.yml", f"""\
        services:
          a:
            image: {cluster.image}
            command: sleep 3600
            stop_grace_period: 1s
          b:
            image: {cluster.image}
            command: sleep 3600
            stop_grace_period: 1s
        """)
    override = _write(tmp_path, "override.yml", """\
        services:
          b:
            environment:
              CHANGED: "yes"
        """)
    cluster.ok("stack", "deploy", "-c", base, "--detach=false", "re", timeout=90)
    a_tasks = {t["id"] for t in running_tasks(cluster.tasks("re_a"))}

    out = cluster.ok("stack", "deploy", "-c", base, "-c", override, "re")
    assert out.splitlines() == ["Updating service re_b"], out
    assert "CHANGED=yes" in cluster.service("re_b")["spec"]["env"]
    assert {t["id"] for t in running_tasks(cluster.tasks("re_a"))} == a_tasks

    only_a = _write(tmp_path, "only-a.yml", f"""\
        services:
          a:
            image: {cluster.image}
            command: sleep 3600
            stop_grace_period: 1s
        """)
    out = cluster.ok("stack", "deploy", "-c", only_a, "re")        # without --prune, b stays
    assert out == "" and "re_b" in cluster.service_names()
    out = cluster.ok("stack", "deploy", "-c", only_a, "--prune", "re")
    assert out.splitlines() == ["Removing service re_b"], out
    assert "re_b" not in cluster.service_names()
    cluster.ok("stack", "rm", "re")


def test_a_bad_stack_file_names_file_line_and_key_and_stores_nothing(cluster, tmp_path):
    good = _write(tmp_path, "good.yml", f"""\
        services:
          web:
            image: {cluster.image}
            command: sleep 3600
        """)
    cluster.ok("stack", "deploy", "-c", good, "bad")
    spec_before = cluster.service("bad_web")["spec"]

    typo = _write(tmp_path, "typo.yml", f"""\
        services:
          web:
            image: {cluster.image}
            command: sleep 3600
          extra:
            image: {cluster.image}
            deploy:
              replicas: three
        """)
    result = cluster.cli("stack", "deploy", "-c", typo, "bad")
    assert result.rc != 0
    assert "typo.yml:8" in result.err and "services.extra.deploy.replicas" in result.err, result.err
    # A file that loads but holds a service the manager refuses: the whole stack is refused.
    refused = _write(tmp_path, "refused.yml", f"""\
        services:
          web:
            image: {cluster.image}
            command: sleep 1
          extra:
            image: {cluster.image}
            deploy:
              placement:
                constraints: ["node.nothing ~ x"]
        """)
    result = cluster.cli("stack", "deploy", "-c", refused, "bad")
    assert result.rc != 0 and "constraints[0]" in result.err, result.err
    assert cluster.service("bad_web")["spec"] == spec_before
    assert "bad_extra" not in cluster.service_names()

    result = cluster.cli("stack", "rm", "nothing-here")
    assert result.rc != 0 and "Nothing found in stack: nothing-here" in result.err, result.err
    cluster.ok("stack", "rm", "bad")


def test_stack_files_are_read_where_the_cli_runs(cluster, tmp_path):
    """Interpolation uses the CLI's environment, and a required variable that is unset stops
    the deploy before anything is sent."""
    path = _write(tmp_path, "env.yml", """\
        services:
          app:
            image: ${IMAGE:?set IMAGE to the image to run}
            command: sleep 3600
        """)
    env = dict(cluster.env)
    env.pop("IMAGE", None)
    cluster.env = env
    result = cluster.cli("stack", "deploy", "-c", path, "envstack")
    assert result.rc != 0 and "set IMAGE to the image to run" in result.err, result.err
    assert "envstack_app" not in cluster.service_names()
    cluster.env = dict(env, IMAGE=cluster.image)
    cluster.ok("stack", "deploy", "-c", path, "envstack")
    assert cluster.service("envstack_app")["spec"]["image"] == cluster.image
    cluster.ok("stack", "rm", "envstack")


def test_service_templates_are_expanded_per_task(cluster, tmp_path):
    path = _write(tmp_path, "templates.yml", f"""\
        services:
          tpl:
            image: {cluster.image}
            command: sleep 3600
            stop_grace_period: 1s
            hostname: "{{{{.Node.Hostname}}}}-{{{{.Task.Slot}}}}"
            environment:
              TASK: "{{{{.Task.Name}}}}"
              SERVICE: "{{{{.Service.Name}}}}"
            deploy:
              replicas: 2
        """)
    cluster.ok("stack", "deploy", "-c", path, "--detach=false", "tpl", timeout=90)
    seen = set()
    for container in cluster.containers("tpl_tpl"):
        attrs = cluster.docker.api.inspect_container(container.id)
        task = next(t for t in cluster.tasks("tpl_tpl") if t["id"] == attrs["Config"]["Labels"]["com.swarmpy.task.id"])
        assert attrs["Config"]["Hostname"] == f"swarmpy-test-{task['slot']}"
        assert f"TASK=tpl_tpl.{task['slot']}.{task['id']}" in attrs["Config"]["Env"]
        assert "SERVICE=tpl_tpl" in attrs["Config"]["Env"]
        seen.add(task["slot"])
    assert seen == {1, 2}
    cluster.ok("stack", "rm", "tpl")
