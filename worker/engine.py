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
            self.api.inspect_image(image)
            self._images_present[image] = time.monotonic()
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
        except DockerException as exc:
            raise ImageUnavailable(f"pulling {image} failed: {exc}") from exc

    def create(self, name: str, image: str, command: list[str], env: list[str], labels: dict,
               limits: dict, reservations: dict, gpu_ids: list[str]) -> str:
        device_requests = ([docker.types.DeviceRequest(driver="nvidia", device_ids=gpu_ids,
                                                       capabilities=[["gpu"]])] if gpu_ids else None)
        host_config = self.api.create_host_config(
            nano_cpus=limits.get("nano_cpus") or None, mem_limit=limits.get("memory_bytes") or None,
            mem_reservation=reservations.get("memory_bytes") or None, device_requests=device_requests)
        container = self.api.create_container(image, command=command or None, name=name, labels=labels,
                                              environment=env, host_config=host_config)
        return container["Id"]

    def start(self, container_id: str) -> None:
        self.api.start(container_id)

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

    def exit_code(self, container_id: str) -> tuple[bool, int | None, str]:
        """(running, exit code, engine error) of a container; a vanished one counts as exited."""
        try:
            state = self.api.inspect_container(container_id)["State"]
        except NotFound:
            return False, None, "container removed"
        return state.get("Running", False), state.get("ExitCode"), state.get("Error", "")

    # -- streams ---------------------------------------------------------------------
    def follow_exits(self, node_id: str, on_exit: Callable[[str, int | None], None]) -> threading.Thread:
        """Call `on_exit(container_id, exit_code)` from a thread for every die event."""
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    events = self.api.events(decode=True, filters={
                        "type": "container", "event": ["die"], "label": [f"{LABEL_NODE}={node_id}"]})
                    for ev in events:
                        code = ev.get("Actor", {}).get("Attributes", {}).get("exitCode")
                        on_exit(ev.get("id", ""), int(code) if code is not None else None)
                        if self._stop.is_set():
                            break
                except Exception as exc:   # engine restarted or connection lost: follow again
                    if not self._stop.is_set():
                        self.log.warning("event_stream_lost", error=str(exc))
                        self._stop.wait(1.0)

        thread = threading.Thread(target=loop, name="docker-events", daemon=True)
        thread.start()
        return thread

    def logs(self, container_id: str, follow: bool, tail: str):
        return self.api.logs(container_id, stream=True, follow=follow,
                             tail=int(tail) if str(tail).isdigit() else "all")
