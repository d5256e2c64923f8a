#!/usr/bin/env python3
"""Record what Docker itself makes of the stack corpus: the "golden" outputs of issue 4.

For every file in tests/stacks/corpus/*.yml (positive cases) and tests/stacks/negative/*.yml
(negative cases; `*.override.yml` files are second `-c` files of a case, see MULTI_FILE), this
script runs the real Docker CLI against a real, ISOLATED Docker engine and writes into
tests/stacks/golden/:

  <name>.config.yml      stdout of `docker stack config -c FILE` (when docker accepts the file)
  <name>.services.json   (positive cases) after a real `docker stack deploy --resolve-image never
                         -c FILE corpus`: the Spec of every service the stack made, keyed by
                         service name, and the networks, secrets and configs docker created
                         (name, labels, driver, options; config data), ids replaced by names
  <name>.error.txt       (negative cases) docker's exit status and stderr, from `docker stack
                         config` and from `docker stack deploy`

How the engine is isolated: tests/netns.py makes one namespace "host" (its own network
namespace, dockerd and containerd, data under a temp dir); the script runs `docker swarm init`
there, drains the node (so no task ever starts: only the specs matter), and runs every docker
command *inside* that namespace, which has no route off the machine.  Nothing is pulled: every
image name a file uses is first tagged onto the harness's imported busybox image, and deploys
use `--resolve-image never`.  The machine's main dockerd is never touched.  The whole setup is
torn down at the end (by the harness, by pid and name), also after a failure.

The docker CLI sees only PATH, DOCKER_CONFIG (an empty temp dir), DOCKER_HOST and the
interpolation variables in ENV below; every other variable a file mentions is unset on purpose
(that exercises docker's defaults and its "unset means empty string").  Paths under the corpus
and negative dirs are written as `<corpus>` and `<negative>`, so the goldens do not depend on
where the repository is checked out.

Run it (root; needs `ip`, `nsenter`, `iptables`, `dockerd`, `containerd`, `runc`, busybox-static,
the docker SDK for Python and a docker CLI that has `docker stack config`, i.e. 20.10+ built
with it; set SWARMPY_DOCKER_CLI=/path/to/docker to pick one), from the repository root:

    python tests/stacks/record_golden.py              # every case
    python tests/stacks/record_golden.py swarmprom    # only these cases (names without .yml)

It rewrites the golden files of the cases it runs and prints a summary; it exits non-zero if a
positive case did not deploy or a negative case was accepted by both commands.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

CORPUS = HERE / "corpus"
NEGATIVE = HERE / "negative"
GOLDEN = HERE / "golden"
STACK = "corpus"                       # the stack name every case is deployed as
NAMESPACE_LABEL = "com.docker.stack.namespace"
EXTERNAL_LABEL = "swarmpy.corpus.external"   # on the external objects this script pre-creates

# Interpolation variables: the only ones set for docker.  (Recorded in SOURCES.md too.)
ENV = {
    # traefik-dockerswarm-rocks.yml needs these (`${X?Variable not set}`); the `$` in the
    # password hash shows that a value is never interpolated again.
    "USERNAME": "admin",
    "HASHED_PASSWORD": "$apr1$corpus$0123456789abcdefghijk/",
    "DOMAIN": "traefik.corpus.example",
    "EMAIL": "admin@corpus.example",
    # swarmprom.yml: one `${X:-default}` overridden, the others (ADMIN_PASSWORD, SLACK_*,
    # PROMETHEUS_RETENTION) left unset so the defaults apply.
    "ADMIN_USER": "corpus-admin",
    # reactphp-haproxy.yml: image names and a published port (a string cast to an integer).
    "APP_STACK_IMAGE_NAME": "reactphp-foundation-app",
    "APP_STACK_IMAGE_VERSION": "1.0.0",
    "HAPROXY_VERSION": "2.2",
    "HAPROXY_PORT_EXPOSE": "6636",
}

# Objects a case declares `external: true`; created before its deploy, removed after.
EXTERNAL = {
    "atsea": {"secrets": ["postgres_password", "staging_token", "revprox_key", "revprox_cert"]},
    "minio-secrets": {"secrets": ["secret_key", "access_key"]},
    "traefik-dockerswarm-rocks": {"networks": ["traefik-public"]},
    "elk-dogvscat": {"networks": ["proxy"]},
}

# Cases made of several -c files (in order); the extra files are not cases of their own.
MULTI_FILE = {
    "version-mismatch": ["version-mismatch.yml", "version-mismatch.override.yml"],
}

TEST_IMAGE = "swarmpy-test/busybox:latest"
VOLATILE_NET_OPTIONS = {"com.docker.network.driver.overlay.vxlanid_list"}


# -- cases ----------------------------------------------------------------------------------------
def positive_cases() -> dict[str, list[Path]]:
    return {p.stem: [p] for p in sorted(CORPUS.glob("*.yml"))}


def negative_cases() -> dict[str, list[Path]]:
    cases = {p.stem: [p] for p in sorted(NEGATIVE.glob("*.yml")) if not p.name.endswith(".override.yml")}
    for name, files in MULTI_FILE.items():
        cases[name] = [NEGATIVE / f for f in files]
    return cases


# -- text helpers ---------------------------------------------------------------------------------
def placeholders(text: str) -> str:
    """Absolute corpus/negative paths -> `<corpus>` / `<negative>` (stable across checkouts)."""
    return text.replace(str(CORPUS), "<corpus>").replace(str(NEGATIVE), "<negative>")


def placeholders_in(value: Any) -> Any:
    if isinstance(value, str):
        return placeholders(value)
    if isinstance(value, list):
        return [placeholders_in(v) for v in value]
    if isinstance(value, dict):
        return {k: placeholders_in(v) for k, v in value.items()}
    return value


def split_image(ref: str) -> tuple[str, str]:
    """'a/b:tag' -> ('a/b', 'tag'); no tag -> 'latest'.  A ':' before the last '/' is a port."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"


def images_of(config_yaml: str | None, files: list[Path]) -> set[str]:
    """Image names after interpolation (from `docker stack config`), else from the raw files."""
    images: set[str] = set()
    sources = [config_yaml] if config_yaml else [f.read_text() for f in files]
    for text in sources:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            continue
        for svc in (data.get("services") or {}).values():
            image = (svc or {}).get("image")
            if isinstance(image, str) and image and "$" not in image:
                images.add(image)
    return images


# -- the isolated engine ----------------------------------------------------------------------------
class Engine:
    """docker CLI calls run inside the namespace host, against its engine only."""

    def __init__(self, host, cli: str, docker_config: str) -> None:
        self.host = host
        self.cli = cli
        self.env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                    "DOCKER_CONFIG": docker_config, "DOCKER_HOST": host.docker_host, **ENV}
        self.client = host.docker()

    def docker(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        res = self.host.run([self.cli, *args], env=self.env, capture_output=True, text=True,
                            cwd=str(REPO), timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def swarm_init(self) -> None:
        self.docker("swarm", "init", "--advertise-addr", self.host.addr, check=True)
        node = self.docker("info", "--format", "{{.Swarm.NodeID}}", check=True).stdout.strip()
        # Drained: tasks stay pending, nothing runs, only the specs are of interest.
        self.docker("node", "update", "--availability", "drain", node, check=True)

    def versions(self) -> dict[str, str]:
        fmt = "{{.Client.Version}}|{{.Client.APIVersion}}|{{.Server.Version}}|{{.Server.APIVersion}}"
        client, api, server, server_api = self.docker("version", "--format", fmt, check=True).stdout.strip().split("|")
        return {"client": client, "client_api": api, "engine": server, "engine_api": server_api}

    def tag_images(self, images: set[str]) -> None:
        base = self.client.images.get(TEST_IMAGE)
        for ref in sorted(images):
            repo, tag = split_image(ref)
            base.tag(repo, tag)

    # externals
    def create_externals(self, name: str) -> None:
        spec = EXTERNAL.get(name, {})
        for net in spec.get("networks", []):
            self.client.networks.create(net, driver="overlay", attachable=True, labels={EXTERNAL_LABEL: name})
        for sec in spec.get("secrets", []):
            self.client.secrets.create(name=sec, data=f"placeholder for {sec}\n".encode(), labels={EXTERNAL_LABEL: name})

    def remove_externals(self) -> None:
        for net in self.client.networks.list(filters={"label": EXTERNAL_LABEL}):
            net.remove()
        for sec in self.client.secrets.list(filters={"label": EXTERNAL_LABEL}):
            sec.remove()

    # what a deploy made
    def stack_objects(self) -> dict[str, list]:
        flt = {"label": f"{NAMESPACE_LABEL}={STACK}"}
        api = self.client.api
        return {"services": api.services(filters=flt), "networks": api.networks(filters=flt),
                "secrets": api.secrets(filters=flt), "configs": api.configs(filters=flt)}

    def remove_stack(self, timeout: float = 60) -> None:
        self.docker("stack", "rm", STACK)
        deadline = time.monotonic() + timeout
        while any(self.stack_objects().values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"stack {STACK} not gone after {timeout}s: {self.stack_objects()}")
            time.sleep(0.3)
            self.docker("stack", "rm", STACK)        # networks whose removal raced the services


# -- one case -------------------------------------------------------------------------------------
def compose_args(files: list[Path]) -> list[str]:
    return [arg for f in files for arg in ("-c", str(f))]


def describe(engine: Engine) -> dict[str, Any]:
    """Everything the deploy made, ids replaced by names, volatile fields left out."""
    objs = engine.stack_objects()
    api = engine.client.api
    net_names = {n["Id"]: n["Name"] for n in api.networks()}
    secret_names = {s["ID"]: s["Spec"]["Name"] for s in api.secrets()}
    config_names = {c["ID"]: c["Spec"]["Name"] for c in api.configs()}

    services = {}
    for svc in objs["services"]:
        spec = json.loads(json.dumps(svc["Spec"]))
        task = spec.get("TaskTemplate", {})
        for net in task.get("Networks", []) or []:
            net["Target"] = net_names.get(net["Target"], net["Target"])
        for net in spec.get("Networks", []) or []:       # the deprecated service-level field
            net["Target"] = net_names.get(net["Target"], net["Target"])
        cspec = task.get("ContainerSpec", {})
        for ref in cspec.get("Secrets", []) or []:
            ref["SecretID"] = secret_names.get(ref["SecretID"], ref["SecretID"])
        for ref in cspec.get("Configs", []) or []:
            ref["ConfigID"] = config_names.get(ref["ConfigID"], ref["ConfigID"])
        services[spec["Name"]] = spec

    networks = {}
    for net in objs["networks"]:
        ipam = net.get("IPAM") or {}
        networks[net["Name"]] = {
            "Driver": net.get("Driver"), "Scope": net.get("Scope"), "Attachable": net.get("Attachable"),
            "Internal": net.get("Internal"), "Ingress": net.get("Ingress"), "EnableIPv6": net.get("EnableIPv6"),
            "Labels": net.get("Labels") or {},
            # The VXLAN id is allocated by the engine, in creation order: left out.
            "Options": {k: v for k, v in (net.get("Options") or {}).items() if k not in VOLATILE_NET_OPTIONS},
            # Subnets are allocated by the engine (none of the corpus declares ipam.config).
            "IPAM": {"Driver": ipam.get("Driver"), "Options": ipam.get("Options") or {}},
        }
    secrets = {}
    for sec in objs["secrets"]:
        spec = sec["Spec"]
        secrets[spec["Name"]] = {k: spec[k] for k in ("Labels", "Driver", "Templating") if k in spec}
    configs = {}
    for cfg in objs["configs"]:
        spec = cfg["Spec"]
        entry = {k: spec[k] for k in ("Labels", "Templating") if k in spec}
        entry["Data"] = base64.b64decode(spec.get("Data") or "").decode("utf-8", "replace")
        configs[spec["Name"]] = entry
    return {"services": services, "networks": networks, "secrets": secrets, "configs": configs}


# The CLI's own remarks about --detach (docker 23+), which say nothing about the file.
CLI_NOISE = re.compile(r"^Since --detach=false was not specified|^In a future release, --detach=false")


def warnings_of(output: str) -> list[str]:
    """The deploy's remarks, without its progress lines (whose order follows Go map order)."""
    skip = re.compile(r"^(Creating|Updating) (network|service|secret|config) ")
    return [line for line in output.splitlines()
            if line.strip() and not skip.match(line) and not CLI_NOISE.match(line)]


def error_text(stderr: str) -> str:
    return "\n".join(line for line in placeholders(stderr).rstrip().splitlines() if not CLI_NOISE.match(line))


def run_case(engine: Engine, name: str, files: list[Path], positive: bool, meta: dict) -> list[str]:
    problems: list[str] = []
    cargs = compose_args(files)
    shown = " ".join(placeholders(a) for a in cargs)
    engine.remove_stack()

    cfg = engine.docker("stack", "config", *cargs)
    if cfg.returncode == 0:
        (GOLDEN / f"{name}.config.yml").write_text(placeholders(cfg.stdout))
    else:
        (GOLDEN / f"{name}.config.yml").unlink(missing_ok=True)

    engine.tag_images(images_of(cfg.stdout if cfg.returncode == 0 else None, files))
    engine.create_externals(name)
    try:
        dep = engine.docker("stack", "deploy", "--resolve-image", "never", *cargs, STACK, timeout=300)
        made = describe(engine) if dep.returncode == 0 else None
    finally:
        engine.remove_stack()
        engine.remove_externals()

    if positive or dep.returncode == 0:
        if dep.returncode != 0:
            problems.append(f"{name}: deploy failed: {dep.stderr.strip()}")
        else:
            golden = {
                "case": name, "stack": STACK,
                "compose_files": [placeholders(str(f)) for f in files],
                "docker": meta, "env": {k: v for k, v in ENV.items()},
                # pre-created by this script before the deploy (overlay networks, secrets)
                "external": EXTERNAL.get(name, {}),
                "deploy_warnings": placeholders_in(warnings_of(dep.stdout + dep.stderr)),
                **placeholders_in(made),
            }
            (GOLDEN / f"{name}.services.json").write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
            if not positive:
                problems.append(f"{name}: negative case, but `docker stack deploy` accepted it")
    if not positive:
        if dep.returncode != 0:
            (GOLDEN / f"{name}.services.json").unlink(missing_ok=True)
        text = (f"# docker stack config {shown}\n# exit status {cfg.returncode}\n"
                f"{error_text(cfg.stderr)}\n\n"
                f"# docker stack deploy --resolve-image never {shown} {STACK}\n# exit status {dep.returncode}\n"
                f"{error_text(dep.stderr)}\n")
        (GOLDEN / f"{name}.error.txt").write_text(text)
    status = "ok" if not problems else "PROBLEM"
    print(f"  {name:<28} config rc={cfg.returncode}  deploy rc={dep.returncode}  {status}", flush=True)
    return problems


# -- main -----------------------------------------------------------------------------------------
def find_cli() -> str:
    candidates = [os.environ.get("SWARMPY_DOCKER_CLI"), shutil.which("docker"), "/usr/local/bin/docker", "/usr/bin/docker"]
    for cli in filter(None, candidates):
        res = subprocess.run([cli, "stack", "config", "--help"], capture_output=True, text=True)
        if res.returncode == 0 and "--compose-file" in res.stdout:
            return cli
    raise SystemExit("no docker CLI with `docker stack config` found (set SWARMPY_DOCKER_CLI)")


def main(argv: list[str]) -> int:
    from tests.netns import Hosts, netns_available
    reason = netns_available()
    if reason:
        print(f"cannot record goldens here: {reason}", file=sys.stderr)
        return 2
    cases = {**{n: (f, True) for n, f in positive_cases().items()},
             **{n: (f, False) for n, f in negative_cases().items()}}
    if len(cases) != len(positive_cases()) + len(negative_cases()):
        raise SystemExit("a negative case has the name of a positive one")
    wanted = argv or list(cases)
    unknown = [w for w in wanted if w not in cases]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(cases)}")
    GOLDEN.mkdir(exist_ok=True)
    cli = find_cli()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="swarmpy-corpus-cli-") as docker_config, Hosts(1) as hosts:
        host = hosts[0]
        routes = host.run(["ip", "route", "show"], capture_output=True, text=True).stdout
        if any(line.startswith("default") for line in routes.splitlines()):
            raise SystemExit(f"the namespace has a default route; refusing to run:\n{routes}")
        engine = Engine(host, cli, docker_config)
        engine.swarm_init()
        meta = engine.versions()
        print(f"recording with docker CLI {cli} ({meta['client']}) against engine {meta['engine']} "
              f"in namespace {host.netns} (routes: {routes.strip()!r})", flush=True)
        for name in wanted:
            files, positive = cases[name]
            try:
                problems += run_case(engine, name, files, positive, meta)
            except Exception as exc:          # record the others, report this one
                problems.append(f"{name}: {exc}")
                print(f"  {name:<28} ERROR {exc}", flush=True)
        engine.docker("swarm", "leave", "--force")
    for problem in problems:
        print("problem:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
