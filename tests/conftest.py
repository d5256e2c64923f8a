"""Shared fixtures for swarmpy's tests.

Integration tests (everything under tests/integration, or marked
`pytest.mark.integration`) run real swarmpy daemons against the local Docker
engine and are skipped when no engine answers.  They never pull: the test image
is built locally from the host's busybox.

The pieces:

* `docker_client` (session): a docker SDK client; skips when dockerd does not answer.
* `test_image` (session): the name of the busybox image, built once if missing.
* `make_cluster` (function) / `module_cluster_factory` (module): factories that
  `swarmpy init` a one-node cluster in a fresh data dir, with free ports and a
  unique socket, and tear every cluster they made down afterwards.
* `cluster` (module): one shared one-node cluster for tests whose state does
  not interfere (use unique service names).

A `Cluster` runs the CLI against its own socket (`cli`), calls the HTTP API
(`api`), polls (`wait_for`, `stays_true`) and sees its own containers only
(`containers`: filtered by the node-id label); it and the other helpers are in
tests/swarmtest.py, which test modules import.  Teardown always runs
`leave --force`, kills the daemon if it is still alive, removes any container
still labelled with the node's id, and removes the data dir and socket.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # for `import swarmtest` in any import mode
from swarmpy.localengine import build_busybox_image  # noqa: E402
from swarmtest import TEST_IMAGE, Cluster, ClusterFactory  # noqa: E402

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


# -- marking and skipping ------------------------------------------------------------------
def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


_docker_problem: list[str] = []          # cached reason why Docker is unusable, "" if usable


_started_dockerd: list[int] = []


def _docker_unavailable() -> str:
    """"" if an engine answers; starts dockerd when none does and we may (root, docker.io installed)."""
    if not _docker_problem:
        try:
            from swarmpy import localengine
            pid = localengine.ensure_engine(log_path="/tmp/swarmpy-tests-dockerd.log")
            if pid is not None:
                _started_dockerd.append(pid)
            _docker_problem.append("")
        except Exception as exc:     # no SDK, no dockerd, not root, engine does not come up
            _docker_problem.append(f"no Docker engine answers: {exc}")
    return _docker_problem[0]


def pytest_sessionfinish(session, exitstatus):
    for pid in _started_dockerd:     # only the dockerd this session started
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def pytest_runtest_setup(item):
    if item.get_closest_marker("integration") is not None:
        reason = _docker_unavailable()
        if reason:
            pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran clusters shows each node's log tail: a flake seen once in CI
    can then be read from CI's output instead of needing to be reproduced."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in item.funcargs.values():
        # make_cluster and module_cluster_factory keep `clusters`; a HostCluster, `nodes`
        # (a list; docker's client has a `nodes` too, which is not).
        clusters = getattr(value, "clusters", None) or getattr(value, "nodes", None)
        for cluster in clusters if isinstance(clusters, list) else []:
            if hasattr(cluster, "log_tail"):
                report.sections.append((f"swarmpy log of {cluster.hostname}", cluster.log_tail(25)))


# -- Docker and the test image ---------------------------------------------------------------
@pytest.fixture(scope="session")
def docker_client():
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    import docker
    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_client) -> str:
    """The busybox test image, imported from the host's /bin/busybox once (never pulled)."""
    import docker.errors
    try:
        docker_client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        busybox = shutil.which("busybox") or "/bin/busybox"
        if not os.path.exists(busybox):
            pytest.skip(f"{TEST_IMAGE} is missing and there is no busybox binary to build it from")
        build_busybox_image(docker_client, TEST_IMAGE, busybox)
    return TEST_IMAGE


@pytest.fixture
def make_cluster(docker_client, test_image, tmp_path_factory):
    """A factory: `make_cluster(*init_flags, hostname=...)` -> a started Cluster, torn down after the test."""
    factory = ClusterFactory(docker_client, test_image, tmp_path_factory)
    yield factory
    factory.teardown()


@pytest.fixture(scope="module")
def module_cluster_factory(docker_client, test_image, tmp_path_factory):
    """Like make_cluster, but its clusters live until the end of the module."""
    factory = ClusterFactory(docker_client, test_image, tmp_path_factory)
    yield factory
    factory.teardown()


@pytest.fixture(scope="module")
def cluster(module_cluster_factory) -> Cluster:
    """One one-node cluster shared by the tests of a module: use unique service names."""
    return module_cluster_factory(hostname="swarmpy-test")


@pytest.fixture(scope="module")
def host_cluster(test_image):
    """Five test hosts (network namespaces, each with its own dockerd) as 3 managers and
    2 workers; everything made is removed afterwards, also when a test failed."""
    from netns import Hosts, netns_available
    from swarmtest import HostCluster
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with Hosts(5, image=test_image) as hosts:
        cluster = HostCluster(hosts, test_image, managers=3)
        try:
            yield cluster
        finally:
            cluster.teardown()
