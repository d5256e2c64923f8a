"""The manager's HTTP API (JSON under /v1), served on the node's unix socket.

The CLI uses nothing else.  Errors are `{"message": ...}` with the status code of
the underlying error; malformed JSON is a 400 that names the problem.
"""
from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from raft.errors import StoreError
from swarmpy import ca, defaults, log
from swarmpy.manager import secrets, stacks
from swarmpy.models import task_name
from swarmpy.spec import SpecError

if TYPE_CHECKING:
    from swarmpy.daemon import Daemon

V = f"/{defaults.API_VERSION}"


def _json(data, status: int = 200) -> web.Response:
    # orjson: a service object (spec and previous spec) encodes in ~6 us against ~38 us
    # with the json module, on every write a busy leader answers.
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS), status=status,
                        content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"message": message}, status=status)


def guard(daemon: "Daemon"):
    """The one middleware: who may call (a worker's certificate may not drive the cluster; a
    node that is not a manager answers only WORKER_PATHS), then errors as JSON answers. One
    layer, not three: each costs the leader a coroutine per request on every write."""
    @web.middleware
    async def check(request: web.Request, handler):
        # On TCP the caller is its certificate.
        who = ca.identity(request.transport.get_extra_info("peercert") if request.transport else None)
        if who is not None and who[1] == "worker":
            return _error(403, WORKER_CERTIFICATE)
        if daemon.store is None and request.path not in WORKER_PATHS:
            return _error(503, NOT_A_MANAGER)
        try:
            return await handler(request)
        except SpecError as exc:
            return _error(400, str(exc))
        except StoreError as exc:
            return _error(exc.status, str(exc))
        except web.HTTPException:
            raise
        except Exception as exc:
            log.get("httpapi").exception("request_failed", path=request.path)
            return _error(500, f"internal error: {exc}")
    return check


async def _until_client_gone(request: web.Request, poll_s: float = 0.5) -> None:
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(poll_s)


async def _stream(request: web.Request, content_type: str, produce) -> web.StreamResponse:
    """Serve `produce(response)` as a streaming body until it ends or the client goes.
    aiohttp does not cancel a handler whose client left: a quiet `logs -f` or `events`
    would otherwise follow (and hold its agent reader or store watcher) forever."""
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    body = asyncio.ensure_future(produce(response))
    watcher = asyncio.create_task(_until_client_gone(request))
    try:
        await asyncio.wait([body, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not body.done():
            body.cancel()
            await asyncio.gather(body, return_exceptions=True)
            return response
    try:
        body.result()
    except ConnectionResetError:
        return response
    await response.write_eof()
    return response


def _version(request: web.Request, kind: str) -> int:
    version = request.query.get("version", "")
    if not version.isdigit():
        raise web.HTTPBadRequest(text=json.dumps({
            "message": f"the query parameter version is required: the {kind} version you read "
                       f"(swarmpy {kind} inspect shows it)"}), content_type="application/json")
    return int(version)


async def _json_body(request: web.Request):
    body = await request.read()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"message": f"malformed JSON in request body: {exc}"}),
                                 content_type="application/json")


NOT_A_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster "
                 "state. Please run this command on a manager node or promote the current node to a manager.")
WORKER_PATHS = (f"{V}/info", f"{V}/leave")
WORKER_CERTIFICATE = ("a worker node's certificate cannot call the manager API; use a manager's or a "
                      "client certificate of this cluster")


class HttpApi:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self.control = daemon.control
        self.app = web.Application(middlewares=[guard(daemon)])
        r = self.app.router
        r.add_get(f"{V}/info", self.info)
        r.add_get(f"{V}/join-tokens", self.join_tokens)
        r.add_get(f"{V}/nodes", self.nodes)
        r.add_get(f"{V}/nodes/{{ref}}", self.node)
        r.add_post(f"{V}/nodes/{{ref}}/update", self.update_node)
        r.add_delete(f"{V}/nodes/{{ref}}", self.remove_node)
        r.add_post(f"{V}/join-tokens/rotate", self.rotate_join_token)
        r.add_get(f"{V}/services", self.services)
        r.add_post(f"{V}/services", self.create_service)
        r.add_get(f"{V}/services/{{ref}}", self.service)
        r.add_post(f"{V}/services/{{ref}}/update", self.update_service)
        r.add_post(f"{V}/services/{{ref}}/rollback", self.rollback_service)
        r.add_delete(f"{V}/services/{{ref}}", self.remove_service)
        r.add_get(f"{V}/services/{{ref}}/logs", self.service_logs)
        r.add_get(f"{V}/tasks", self.tasks)
        r.add_post(f"{V}/stacks", self.deploy_stack)
        for kind in secrets.KINDS:
            r.add_get(f"{V}/{kind}s", functools.partial(self.list_objects, kind))
            r.add_post(f"{V}/{kind}s", functools.partial(self.create_object, kind))
            r.add_get(f"{V}/{kind}s/{{ref}}", functools.partial(self.inspect_object, kind))
            r.add_delete(f"{V}/{kind}s/{{ref}}", functools.partial(self.remove_object, kind))
        r.add_delete(f"{V}/stacks/{{name}}", self.remove_stack)
        r.add_get(f"{V}/networks", self.networks)
        r.add_post(f"{V}/networks", self.create_network)
        r.add_get(f"{V}/networks/{{ref}}", self.network)
        r.add_delete(f"{V}/networks/{{ref}}", self.remove_network)
        r.add_post(f"{V}/leave", self.leave)
        r.add_get(f"{V}/events", self.events)
        self._runner: web.AppRunner | None = None

    async def start(self, socket_path: str, tcp: tuple[str, int] | None = None, ssl_context=None) -> None:
        """Serve on the unix socket and, given a mutual-TLS context, on TCP too."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, socket_path).start()
        if tcp is not None:
            if ssl_context is None:
                raise ValueError("the API is never served on TCP without TLS")
            await web.TCPSite(self._runner, tcp[0], tcp[1], ssl_context=ssl_context).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    # -- handlers ---------------------------------------------------------------------
    async def info(self, request):
        return _json(self.daemon.info())

    async def join_tokens(self, request):
        return _json(self.control.join_tokens())

    async def nodes(self, request):
        return _json(self.control.list_nodes())

    async def node(self, request):
        return _json(self.control.node(request.match_info["ref"]))

    async def remove_node(self, request):
        force = request.query.get("force", "") in ("1", "true")
        return _json({"id": await self.control.remove_node(request.match_info["ref"], force)})

    async def rotate_join_token(self, request):
        body = await _json_body(request)
        role = body.get("role") if isinstance(body, dict) else None
        return _json({"token": await self.control.rotate_join_token(role)})

    async def update_node(self, request):
        node = await self.control.update_node(request.match_info["ref"], _version(request, "node"),
                                              await _json_body(request))
        return _json(node)

    async def services(self, request):
        return _json(self.control.list_services())

    async def service(self, request):
        return _json(self.control.inspect_service(request.match_info["ref"]))

    async def create_service(self, request):
        service = await self.control.create_service(await _json_body(request))
        return _json(service, status=201)

    async def update_service(self, request):
        return _json(await self.control.update_service(request.match_info["ref"], _version(request, "service"),
                                                       await _json_body(request)))

    async def rollback_service(self, request):
        return _json(await self.control.rollback_service(request.match_info["ref"]))

    async def remove_service(self, request):
        return _json({"id": await self.control.remove_service(request.match_info["ref"])})

    async def list_objects(self, kind: str, request):
        return _json(self.control.list_objects(kind))

    async def create_object(self, kind: str, request):
        obj = await self.control.create_object(kind, await _json_body(request))
        return _json(obj, status=201)

    async def inspect_object(self, kind: str, request):
        return _json(self.control.inspect_object(kind, request.match_info["ref"]))

    async def remove_object(self, kind: str, request):
        return _json({"id": await self.control.remove_object(kind, request.match_info["ref"])})

    async def networks(self, request):
        return _json(self.control.list_networks())

    async def create_network(self, request):
        return _json(await self.control.create_network(await _json_body(request)), status=201)

    async def network(self, request):
        return _json(self.control.inspect_network(request.match_info["ref"]))

    async def remove_network(self, request):
        return _json({"id": await self.control.remove_network(request.match_info["ref"])})

    async def deploy_stack(self, request):
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise SpecError("stack", "the body must be a JSON object with name, services and prune")
        result = await stacks.deploy(self.daemon.store, self.control.sealer, body.get("name"),
                                     body.get("services"), prune=bool(body.get("prune")),
                                     objects={k: body.get(k) for k in ("secrets", "configs", "networks")})
        return _json(result)

    async def remove_stack(self, request):
        removed = await stacks.remove(self.daemon.store, request.match_info["name"])
        return _json({"removed": removed})

    async def tasks(self, request):
        q = request.query
        return _json(self.control.list_tasks(q.get("service"), q.get("node"), q.get("desired-state")))

    async def service_logs(self, request):
        service = self.control.service(request.match_info["ref"])
        follow = request.query.get("follow", "") in ("1", "true")
        tail = request.query.get("tail", "all")
        tasks = [t for t in self.control.list_tasks(service["id"]) if t["status"].get("container_id")]
        return await _stream(request, "text/plain; charset=utf-8", lambda response: asyncio.gather(
            *(self._pump_task_logs(response, t, follow, tail) for t in tasks)))

    async def _pump_task_logs(self, response, task: dict, follow: bool, tail: str) -> None:
        node = self.daemon.store.get("nodes", task["node_id"]) or {}
        prefix = (f"{task_name(task)}.{task['id'][:12]}@"
                  f"{node.get('description', {}).get('hostname', task['node_id'])}    | ").encode()
        pending = b""
        async for chunk in self.daemon.dispatcher.container_logs(
                task["node_id"], task["status"]["container_id"], follow, tail):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if lines:
                await response.write(b"".join(prefix + line + b"\n" for line in lines))
        if pending:
            await response.write(prefix + pending + b"\n")

    async def events(self, request):
        """Committed changes as JSON lines: {"action", "kind", "id", "name", "index"}; follows until
        the client goes.  Cluster-object events are left out: they carry the join tokens."""
        kinds = set(request.query.getall("kind", [])) or None

        async def produce(response) -> None:
            queue = self.daemon.store.watch()
            try:
                while True:
                    lines = [json.dumps({"action": e.action, "kind": e.kind, "id": e.obj["id"],
                                         "name": (e.obj.get("spec") or {}).get("name") if e.kind != "tasks" else None,
                                         "index": e.index, "time": time.time()}) + "\n"
                             for e in await queue.get()
                             if e.kind != "cluster" and (not kinds or e.kind in kinds)]
                    if lines:
                        await response.write("".join(lines).encode())
            finally:
                self.daemon.store.unwatch(queue)

        return await _stream(request, "application/x-ndjson", produce)

    async def leave(self, request):
        force = request.query.get("force", "") in ("1", "true")
        if not force and self.daemon.is_manager:
            return _error(409, "You are attempting to leave the swarm on a node that is participating as a "
                               "manager. Removing the last manager erases all current state of the swarm. "
                               "Use `--force` to ignore this message.")
        removed = await self.daemon.prepare_leave()
        asyncio.get_running_loop().call_later(0.1, self.daemon.request_stop)
        return _json({"removed_containers": removed})
