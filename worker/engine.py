"""The Docker Engine, as the agent uses it: blocking docker-SDK calls run on a
bounded thread pool (so that containers start in parallel), plus a thread that
follows the engine's `die` events for this node's containers."""
from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from swarmpy import defaults, log
from worker import dockerargs

LABEL_NODE = "com.swarmpy.node.id"
LABEL_SERVICE_ID = "com.swarmpy.service.id"
LABEL_SERVICE_NAME = "com.swarmpy.service.name"
LABEL_TASK = "com.swarmpy.task.id"
LABEL_SLOT = "com.swarmpy.task.slot"
NO_PULL_ENV = "SWARMPY_NO_PULL"     # set in tests and CI: this node never pulls
IMAGE_CACHE_S = 10.0


class ImageUnavailable(Exception):
    pass


class Engine:
    def __init__(self, workers: int = defaults.DOCKER_WORKERS) -> None:
        self.client = docker.from_env(max_pool_size=workers + 4, timeout=120)
        self.api = self.client.api
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="docker")
        self.pulls_disabled = os.environ.get(NO_PULL_ENV, "") not in ("", "0")
        self.log = log.get("engine")
        self._stop = threading.Event()
        self._images_present: dict[str, float] = {}
        self._image_health: dict[str, bool] = {}      # image -> it has a HEALTHCHECK of its own
        self._health_watchers: dict[str, Callable[[str], None]] = {}   # container id -> callback

    async def call(self, fn: Callable, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    # -- facts -------------------------------------------------------------------
    def describe(self) -> dict:
        info = self.api.info()
        labels = dict(label.split("=", 1) for label in info.get("Labels") or [] if "=" in label)
        return {"version": info.get("ServerVersion", ""), "labels": labels}

    def node_containers(self, node_id: str) -> list[dict]:
        return self.api.containers(all=True, filters={"label": f"{LABEL_NODE}={node_id}"})

    # -- task lifecycle -------------------------------------------------------------
    def ensure_image(self, image: str, policy: str) -> None:
        # One inspect per image per IMAGE_CACHE_S: fifty replicas need not ask fifty times.
        seen = self._images_present.get(image)
        if policy != "always" and seen is not None and time.monotonic() - seen < IMAGE_CACHE_S:
            return
        present = True
        try:
            self._note_image(self.api.inspect_image(image), image)
        except ImageNotFound:
            present = False
            self._images_present.pop(image, None)
        if present and policy != "always":
            return
        if policy == "never" or (not present and self.pulls_disabled):
            raise ImageUnavailable(f"No such image: {image} (pull policy is "
                                   f"{'never' if policy == 'never' else 'off on this node'})")
        if self.pulls_disabled:
            return          # --pull always on a node that never pulls: use what is there
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
        try:
            self.api.pull(repo, tag=tag)
            self._image_health.pop(image, None)     # the new image may differ
        except DockerException as exc:
            raise ImageUnavailable(f"pulling {image} failed: {exc}") from exc

    def _note_image(self, info: dict, image: str) -> None:
        self._images_present[image] = time.monotonic()
        test = ((info.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
        self._image_health[image] = bool(test) and test[0] != "NONE"

    def image_has_healthcheck(self, image: str) -> bool:
        if image not in self._image_health:
            self._note_image(self.api.inspect_image(image), image)
        return self._image_health[image]

    def create(self, name: str, image: str, command: list[str], env: list[str], labels: dict,
               limits: dict, gpu_ids: list[str], spec: dict | None = None,
               networks: list[dict] | None = None) -> str:
        """Create a task's container; `spec` (the service spec's dict form) gives docker's
        ContainerSpec fields: entrypoint, user, mounts, ports, healthcheck and the rest.
        Reservations are the scheduler's business only: the engine gets the limits (SwarmKit).
        `networks` ([{"name", "addr", "gateway"}]): the overlays it joins, at the allocator's
        addresses, with the node's resolver (the first network's gateway) as its DNS server."""
        spec, networks = spec or {}, networks or []
        container_id = self._create(name, image, command, env, labels, limits, gpu_ids, spec, networks)
        for net in networks[1:]:
            self.api.connect_container_to_network(container_id, net["name"], ipv4_address=net["addr"])
        return container_id

    def _create(self, name: str, image: str, command: list[str], env: list[str], labels: dict,
                limits: dict, gpu_ids: list[str], spec: dict, networks: list[dict]) -> str:
        device_requests = ([docker.types.DeviceRequest(driver="nvidia", device_ids=gpu_ids,
                                                       capabilities=[["gpu"]])] if gpu_ids else None)
        host_args = dockerargs.host_config(spec)
        networking = None
        if networks:
            # The node's resolver answers service names and forwards the rest (to the
            # spec's own DNS servers, if any); docker's embedded DNS forwards to it.
            host_args.update(dns=[networks[0]["gateway"]], network_mode=networks[0]["name"])
            networking = self.api.create_networking_config(
                {networks[0]["name"]: self.api.create_endpoint_config(ipv4_address=networks[0]["addr"])})
        host_config = self.api.create_host_config(
            nano_cpus=limits.get("nano_cpus") or None, mem_limit=limits.get("memory_bytes") or None,
            device_requests=device_requests, **host_args)
        config = dict(command=command or None, labels=labels, environment=env, host_config=host_config,
                      detach=True, networking_config=networking, **dockerargs.container_config(spec))
        start_interval = dockerargs.nanos((spec.get("healthcheck") or {}).get("start_interval"))
        if not start_interval:
            return self.api.create_container(image, name=name, **config)["Id"]
        # The SDK's Healthcheck type has no StartInterval (API 1.44): set it in the config.
        body = self.api.create_container_config(image, **config)
        body["Healthcheck"]["StartInterval"] = start_interval
        return self.api.create_container_from_config(body, name)["Id"]

    def start(self, container_id: str) -> None:
        self.api.start(container_id)

    def pid(self, container_id: str) -> int:
        """The container's main process, whose network namespace is the container's."""
        return int(self.api.inspect_container(container_id)["State"].get("Pid") or 0)

    def stop(self, container_id: str, grace_s: float) -> None:
        try:
            self.api.stop(container_id, timeout=int(round(grace_s)))
        except NotFound:
            pass

    def remove(self, container_id: str) -> None:
        try:
            self.api.remove_container(container_id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            if "already in progress" not in str(exc):
                raise

    def health(self, container_id: str) -> str:
        """The container's health ("starting", "healthy", "unhealthy"), or "exited"."""
        try:
            state = self.api.inspect_container(container_id)["State"]
        except NotFound:
            return "exited"
        if not state.get("Running"):
            return "exited"
        return (state.get("Health") or {}).get("Status", "")

    def watch_health(self, container_id: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(status)` from the events thread at each health change of the
        container; returns the function that stops it."""
        self._health_watchers[container_id] = callback
        return lambda: self._health_watchers.pop(container_id, None)

    def exit_code(self, container_id: str) -> tuple[bool, int | None, str]:
        """(running, exit code, engine error) of a container; a vanished one counts as exited."""
        try:
            state = self.api.inspect_container(container_id)["State"]
        except NotFound:
            return False, None, "container removed"
        return state.get("Running", False), state.get("ExitCode"), state.get("Error", "")

    # -- streams ---------------------------------------------------------------------
    def follow_exits(self, node_id: str, on_exit: Callable[[str, int | None], None]) -> threading.Thread:
        """Call `on_exit(container_id, exit_code)` from a thread for every die event, and
        the `watch_health` callbacks for health changes (one stream for both)."""
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    events = self.api.events(decode=True, filters={
                        "type": "container", "event": ["die", "health_status"],
                        "label": [f"{LABEL_NODE}={node_id}"]})
                    for ev in events:
                        self._dispatch(ev, on_exit)
                        if self._stop.is_set():
                            break
                except Exception as exc:   # engine restarted or connection lost: follow again
                    if not self._stop.is_set():
                        self.log.warning("event_stream_lost", error=str(exc))
                        self._stop.wait(1.0)

        thread = threading.Thread(target=loop, name="docker-events", daemon=True)
        thread.start()
        return thread

    def _dispatch(self, ev: dict, on_exit: Callable[[str, int | None], None]) -> None:
        action, container_id = ev.get("Action", ""), ev.get("id", "")
        if action.startswith("health_status"):
            # "health_status: healthy"; exec-based probes may add the command after a second colon
            watcher = self._health_watchers.get(container_id)
            if watcher is not None:
                watcher(action.split(":")[1].strip())
            return
        code = ev.get("Actor", {}).get("Attributes", {}).get("exitCode")
        on_exit(container_id, int(code) if code is not None else None)

    def logs(self, container_id: str, follow: bool, tail: str):
        return self.api.logs(container_id, stream=True, follow=follow,
                             tail=int(tail) if str(tail).isdigit() else "all")
