"""stacks/convert.py against Docker's own converter, on the stack corpus (issue 4).

For every positive corpus file: load it with the environment Docker ran with, convert it as stack
"corpus", and compare each service with the Spec `docker stack deploy` created (tests/stacks/golden),
field by field, after one explicit mapping of Docker's Spec JSON onto swarmpy's ServiceSpec fields
(`docker_spec_to_swarmpy`).  Both sides then go through the manager's own validation
(swarmpy.spec.parse_service_spec), which also fills swarmpy's defaults: where Docker writes a default
(UpdateConfig.Parallelism 1, RestartPolicy.Condition any, ...) and swarmpy leaves its field to the same
default, the effective values are compared.

What swarmpy deliberately does not do, or does differently, is listed in GAPS, and each is asserted to
be exactly that gap: a Docker field the mapping has no swarmpy field for must be one of them, with the
value the gap predicts.  The negative corpus files must fail in load or convert naming the same key.
"""
from __future__ import annotations

import base64
import functools
import importlib.util
from pathlib import Path

import pytest

from stacks.convert import StackPlan, convert
from stacks.errors import StackFileError
from stacks.loader import load, load_text
from swarmpy.models import ServiceSpec, to_dict
from swarmpy.spec import parse_service_spec

STACKS = Path(__file__).resolve().parents[1] / "stacks"
NS_PER_S = 1_000_000_000


def _load_golden_module():
    # By path: tests/stacks has no __init__.py, so that `stacks` stays the project's package.
    spec = importlib.util.spec_from_file_location("stack_corpus_golden", STACKS / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden = _load_golden_module()

# What swarmpy deliberately lacks or does differently: each entry is checked to be exactly so.
GAPS = {
    "network_options": "swarmpy's overlay takes one driver option, multicast: docker's `encrypted` (and "
                       "any other driver_opts) is left out of the created network, with a warning naming it",
    "image_latest": "the engine appends :latest to an image without a tag or digest; swarmpy keeps "
                    "the image as written and leaves that to the engine at pull/run time",
    "secret_id": "the goldens record SecretID/ConfigID as the object's name (ids are random): they "
                 "must equal SecretName/ConfigName, which is what swarmpy's `source` holds",
}
# Corpus files that do not convert, with the gap that stops them.
REFUSED: dict[str, str] = {}


# -- Docker's Spec JSON -> swarmpy's ServiceSpec fields ---------------------------------------------
def _pop(node: dict, *path):
    """Remove and return node[path[0]][path[1]]...; None when absent."""
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return None
    return node.pop(path[-1], None)


def _pruned(value):
    """value without None / {} / [] (what a popped-from object has left)."""
    if isinstance(value, dict):
        value = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in value.items() if v not in (None, {}, [])}
    return value


def _seconds(ns) -> float | None:
    return None if ns is None else ns / NS_PER_S


def _set(out: dict, key: str, value) -> None:
    # Absent on docker's side: leave the field to swarmpy's default (both sides get it).
    if value is not None:
        out[key] = value


def _items(node: dict, key: str, one) -> list | None:
    """Map each item of node[key] with one(item) (which pops what it uses); items with
    unmapped fields are put back under key, so they show as leftovers."""
    items = node.pop(key, None)
    if items is None:
        return None
    mapped = [one(item) for item in items]
    left = [_pruned(item) for item in items if _pruned(item)]
    if left:
        node[key] = left
    return mapped


def _resources(res: dict | None) -> dict | None:
    if not res:
        return None
    out = {"nano_cpus": res.pop("NanoCPUs", 0), "memory_bytes": res.pop("MemoryBytes", 0), "generic": {}}
    for item in _items(res, "GenericResources", lambda g: g) or []:
        discrete = item.pop("DiscreteResourceSpec", None)
        if discrete:
            out["generic"][discrete.pop("Kind")] = discrete.pop("Value")
    return out


def _update_config(cfg: dict | None) -> dict | None:
    if cfg is None:
        return None
    out: dict = {}
    for docker, ours in (("Parallelism", "parallelism"), ("FailureAction", "failure_action"),
                         ("MaxFailureRatio", "max_failure_ratio"), ("Order", "order")):
        _set(out, ours, cfg.pop(docker, None))
    for docker, ours in (("Delay", "delay"), ("Monitor", "monitor")):
        _set(out, ours, _seconds(cfg.pop(docker, None)))
    return out


def _healthcheck(hc: dict | None) -> dict | None:
    if hc is None:
        return None
    out = {"test": hc.pop("Test", [])}
    for docker, ours in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                         ("StartInterval", "start_interval")):
        _set(out, ours, _seconds(hc.pop(docker, None)))
    _set(out, "retries", hc.pop("Retries", None))
    return out


def _mount(m: dict) -> dict:
    out = {"type": m.pop("Type"), "target": m.pop("Target"), "source": m.pop("Source", ""),
           "read_only": m.pop("ReadOnly", False)}
    _set(out, "consistency", m.pop("Consistency", None))
    _set(out, "bind_propagation", _pop(m, "BindOptions", "Propagation"))
    _set(out, "volume_nocopy", _pop(m, "VolumeOptions", "NoCopy"))
    _set(out, "volume_labels", _pop(m, "VolumeOptions", "Labels"))
    _set(out, "volume_driver", _pop(m, "VolumeOptions", "DriverConfig", "Name"))
    _set(out, "volume_driver_options", _pop(m, "VolumeOptions", "DriverConfig", "Options"))
    _set(out, "tmpfs_size_bytes", _pop(m, "TmpfsOptions", "SizeBytes"))
    _set(out, "tmpfs_mode", _pop(m, "TmpfsOptions", "Mode"))
    return out


def _port(p: dict) -> dict:
    return {"target": p.pop("TargetPort"), "published": p.pop("PublishedPort", 0),
            "protocol": p.pop("Protocol", "tcp"), "mode": p.pop("PublishMode", "ingress")}


def _file_ref(kind: str):
    def one(ref: dict) -> dict:
        name = ref.pop(f"{kind}Name")
        # gap "secret_id": recorded as the name, so it must equal it
        assert ref.pop(f"{kind}ID") == name, ("secret_id", ref)
        file = ref.get("File") or {}
        out = {"source": name, "target": file.pop("Name"), "uid": file.pop("UID"),
               "gid": file.pop("GID"), "mode": file.pop("Mode")}
        return out
    return one


def _mode(mode: dict, out: dict) -> dict:
    """Replicated / Global / ReplicatedJob / GlobalJob map to swarmpy's modes; a job's
    MaxConcurrent equal to its TotalCompletions is swarmpy's max_concurrent 0."""
    if "Replicated" in mode:
        out["mode"] = "replicated"
        _set(out, "replicas", (mode["Replicated"] or {}).get("Replicas"))
        return {}
    if "Global" in mode:
        out["mode"] = "global"
        return {}
    if "ReplicatedJob" in mode:
        job = dict(mode["ReplicatedJob"] or {})
        out["mode"] = "replicated-job"
        _set(out, "replicas", job.pop("TotalCompletions", None))
        if job.get("MaxConcurrent") != out.get("replicas"):
            _set(out, "max_concurrent", job.pop("MaxConcurrent", None))
        else:
            job.pop("MaxConcurrent")
        return {"ReplicatedJob": job} if job else {}
    if "GlobalJob" in mode:
        out["mode"] = "global-job"
        return {}
    return mode


def docker_spec_to_swarmpy(raw: dict) -> tuple[dict, dict]:
    """Docker's service Spec (as `docker service inspect` shows it) -> (swarmpy ServiceSpec fields,
    the Docker fields left with no swarmpy field).  Units become swarmpy's: nanoseconds -> seconds.
    A field Docker leaves out is left out, for swarmpy's default to apply."""
    out: dict = {}
    # Mode comes from the raw spec: normalise_spec drops the empty {"Global": {}}.
    left_mode = _mode(raw.get("Mode") or {}, out)
    spec = golden.normalise_spec(raw)
    spec.pop("Mode", None)
    task = spec.setdefault("TaskTemplate", {})
    c = task.setdefault("ContainerSpec", {})
    _set(out, "name", spec.pop("Name", None))
    _set(out, "labels", spec.pop("Labels", None))
    for docker, ours in (("Image", "image"), ("Args", "command"), ("Command", "entrypoint"), ("Env", "env"),
                         ("Labels", "container_labels"), ("Hostname", "hostname"), ("Dir", "working_dir"),
                         ("User", "user"), ("StopSignal", "stop_signal"), ("TTY", "tty"),
                         ("OpenStdin", "open_stdin"), ("ReadOnly", "read_only"), ("Init", "init"),
                         ("Hosts", "hosts"), ("Sysctls", "sysctls"), ("CapabilityAdd", "cap_add"),
                         ("CapabilityDrop", "cap_drop")):
        _set(out, ours, c.pop(docker, None))
    for docker, ours in (("Nameservers", "dns_nameservers"), ("Search", "dns_search"),
                         ("Options", "dns_options")):
        _set(out, ours, _pop(c, "DNSConfig", docker))
    _set(out, "ulimits", _items(c, "Ulimits", lambda u: {"name": u.pop("Name"), "soft": u.pop("Soft"),
                                                         "hard": u.pop("Hard")}))
    _set(out, "stop_grace_period", _seconds(c.pop("StopGracePeriod", None)))
    _set(out, "healthcheck", _healthcheck(c.get("Healthcheck")))
    _set(out, "mounts", _items(c, "Mounts", _mount))
    _set(out, "secrets", _items(c, "Secrets", _file_ref("Secret")))
    _set(out, "configs", _items(c, "Configs", _file_ref("Config")))
    resources = task.get("Resources") or {}
    _set(out, "limits", _resources(resources.get("Limits")))
    _set(out, "reservations", _resources(resources.get("Reservations")))
    policy = task.get("RestartPolicy")
    if policy is not None:
        out["restart_policy"] = {}
        _set(out["restart_policy"], "condition", policy.pop("Condition", None))
        _set(out["restart_policy"], "max_attempts", policy.pop("MaxAttempts", None))
        _set(out["restart_policy"], "delay", _seconds(policy.pop("Delay", None)))
        _set(out["restart_policy"], "window", _seconds(policy.pop("Window", None)))
    _set(out, "constraints", _pop(task, "Placement", "Constraints"))
    _set(out, "preferences", _items(task.get("Placement") or {}, "Preferences",
                                    lambda p: "spread=" + p.pop("Spread").pop("SpreadDescriptor")))
    _set(out, "max_replicas_per_node", _pop(task, "Placement", "MaxReplicas"))
    if task.get("LogDriver") is not None:
        log = task["LogDriver"]
        out["log_driver"] = {"name": log.pop("Name", ""), "options": log.pop("Options", {})}
    _set(out, "update_config", _update_config(spec.get("UpdateConfig")))
    _set(out, "rollback_config", _update_config(spec.get("RollbackConfig")))
    _set(out, "ports", _items(spec.get("EndpointSpec") or {}, "Ports", _port))
    _set(out, "endpoint_mode", _pop(spec, "EndpointSpec", "Mode"))
    # ids were recorded as names: Target is the network's name, as swarmpy's converter gives it
    _set(out, "networks", _items(task, "Networks", lambda n: {"target": n.pop("Target"),
                                                              "aliases": n.pop("Aliases", [])}))
    left = golden.normalise_spec({**spec, "Mode": left_mode})
    return out, left


# -- the gaps, each predicted exactly --------------------------------------------------------------
def _is_user_defined(network: str) -> bool:
    # moby's container.NetworkMode.IsUserDefined: aliases only go on user-defined networks
    return network not in ("default", "bridge", "host", "none") and not network.startswith("container:")


def expected_networks(config: dict, service: str) -> list[dict]:
    """The attachments docker's convertServiceNetworks makes for the service, from the file:
    a second derivation of what the golden holds, so that both agree on docker's rules."""
    attached = config["services"][service].get("networks") or {"default": None}
    out = []
    for key, attachment in attached.items():
        top = config["networks"].get(key) or {}
        target = top.get("name") or f"{golden.STACK}_{key}"
        aliases = list((attachment or {}).get("aliases") or [])
        if _is_user_defined(target):
            aliases.append(service)
        out.append({"target": target, "aliases": aliases})
    return sorted(out, key=lambda n: n["target"])


def expected_option_warnings(gold: dict) -> list[str]:
    """Gap "network_options": one warning per created network with driver options other than
    multicast, naming them."""
    out = []
    for name, network in sorted(gold["networks"].items()):
        ignored = sorted(k for k in network.get("Options") or {} if k != "multicast")
        if ignored:
            out.append(f"Ignoring driver_opts {', '.join(ignored)} of network {name}: swarmpy's overlay "
                       "takes multicast only (no encryption, no other driver options)")
    return out


def _has_tag(image: str) -> bool:
    return "@" in image or ":" in image.rsplit("/", 1)[-1]


def docker_image_gap(ours: str, docker: str) -> str:
    """Gap "image_latest": docker's image is ours, or ours + ':latest' when ours has no tag."""
    expected = ours if _has_tag(ours) else f"{ours}:latest"
    assert docker == expected, f"image: docker {docker!r}, expected {expected!r} from swarmpy's {ours!r}"
    return ours


# -- comparison ---------------------------------------------------------------------------------------
def _effective(fields: dict) -> dict:
    """The spec as the manager stores it: validated, swarmpy's defaults filled, order-free lists sorted."""
    spec = to_dict(parse_service_spec(fields))
    for key in ("env", "constraints"):
        spec[key] = sorted(spec[key])
    for key in ("secrets", "configs", "ports"):
        spec[key] = sorted(spec[key], key=lambda item: sorted(item.items()))
    spec["networks"] = sorted(spec["networks"], key=lambda n: n["target"])
    return spec


def differences(where: str, ours: dict, docker: dict) -> list[str]:
    """One line per differing ServiceSpec field, naming file, service and field."""
    return [f"{where} {name}: swarmpy {ours[name]!r} != docker {docker[name]!r}"
            for name in ServiceSpec.__dataclass_fields__ if ours[name] != docker[name]]


@functools.cache
def _golden(name: str) -> dict:
    return golden.docker_golden(name, raw=True)


@functools.cache
def _loaded(name: str):
    return load([str(golden.CORPUS_DIR / f"{name}.yml")], env=_golden(name)["env"])


@functools.cache
def _plan(name: str) -> StackPlan:
    return convert(_loaded(name), golden.STACK)


def _cases() -> list:
    return [pytest.param(name, svc, id=f"{name}:{svc}")
            for name in golden.positive_names() if name not in REFUSED
            for svc in sorted(_golden(name)["services"])]


def test_the_corpus_is_covered():
    names = golden.positive_names()
    assert len(names) == 20
    assert set(REFUSED) <= set(names)
    assert set(REFUSED.values()) <= set(GAPS)
    assert len(_cases()) > 60


def test_every_listed_gap_occurs_in_the_corpus():
    """So that no gap is listed without a case that shows it (each is asserted where it occurs)."""
    seen = set(REFUSED.values())
    for name in golden.positive_names():
        seen |= {"network_options"} if expected_option_warnings(_golden(name)) else set()
    for name, service in ((c.values[0], c.values[1]) for c in _cases()):
        spec = _golden(name)["services"][service]
        task = spec["TaskTemplate"]
        ours = next(s for s in _plan(name).services if s["name"] == service)
        seen |= {"image_latest"} if task["ContainerSpec"]["Image"] != ours["image"] else set()
        seen |= {"secret_id"} if task["ContainerSpec"].get("Secrets") else set()
    assert seen == set(GAPS)


@pytest.mark.parametrize("name", [n for n in golden.positive_names() if n not in REFUSED])
def test_the_same_services(name):
    assert sorted(s["name"] for s in _plan(name).services) == sorted(_golden(name)["services"])


@pytest.mark.parametrize("name,service", _cases())
def test_service_matches_docker(name, service):
    ours = next(s for s in _plan(name).services if s["name"] == service)
    fields, left = docker_spec_to_swarmpy(_golden(name)["services"][service])
    key = service[len(golden.STACK) + 1:]
    assert left == {}, f"{name} {service}: docker fields with no swarmpy field: {left}"
    assert fields["networks"] == expected_networks(_loaded(name).config, key)
    fields["image"] = docker_image_gap(ours["image"], fields["image"])
    problems = differences(f"{name} {service}", _effective(ours), _effective(fields))
    assert not problems, "\n".join(problems)


def test_a_replicated_job_converts_to_swarmpys_job_mode():
    mode = _golden("swarm-cronjob-job")["services"]["corpus_test"]["Mode"]
    assert mode == {"ReplicatedJob": {"MaxConcurrent": 0, "TotalCompletions": 0}}
    (spec,) = _plan("swarm-cronjob-job").services
    assert (spec["mode"], spec["replicas"], spec.get("max_concurrent", 0)) == ("replicated-job", 0, 0)


@pytest.mark.parametrize("name", [n for n in golden.positive_names() if n not in REFUSED])
def test_warnings_are_dockers_plus_the_listed_gaps(name):
    ours = _plan(name).warnings
    # gap "network_options": said for each network whose driver options swarmpy leaves out
    swarmpy_only = [w for w in ours if w.startswith("Ignoring driver_opts ")]
    assert swarmpy_only == expected_option_warnings(_golden(name))
    assert [w for w in ours if w not in swarmpy_only] == _golden(name)["deploy_warnings"]


# -- networks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in golden.positive_names() if n not in REFUSED])
def test_created_and_external_networks_match_docker(name):
    """The networks docker created (only those the services join, STACK_default included when a
    service names none) with their driver, labels, flags and options; the external ones by name."""
    gold = _golden(name)
    ours = {n["name"]: n for n in _plan(name).networks}
    created = {n: o for n, o in ours.items() if not o.get("external")}
    assert sorted(created) == sorted(gold["networks"]), name
    assert sorted(n for n, o in ours.items() if o.get("external")) == sorted(gold["external"].get("networks", []))
    for net_name, body in created.items():
        theirs = gold["networks"][net_name]
        assert (body["driver"], body["attachable"], body["internal"]) == \
            (theirs["Driver"], theirs["Attachable"], theirs["Internal"]), (name, net_name)
        assert body["labels"] == theirs["Labels"], (name, net_name)
        # gap "network_options": only multicast is kept
        assert body["options"] == {k: v for k, v in (theirs.get("Options") or {}).items() if k == "multicast"}
        assert "subnet" not in body and not theirs["IPAM"].get("Config")      # no corpus file sets ipam
        assert not theirs["Ingress"] and not theirs["EnableIPv6"] and theirs["Scope"] == "swarm"
    for body in ours.values():
        if body.get("external"):
            assert body == {"name": body["name"], "external": True}


def test_the_corpus_has_created_external_and_named_networks():
    assert any(n.get("external") for n in _plan("traefik-dockerswarm-rocks").networks)
    assert "proxy" in {n["name"] for n in _plan("traefik-dogvscat").networks}          # name: without external
    assert "corpus_default" in {n["name"] for n in _plan("atsea").networks}           # a service names none


# -- secrets and configs --------------------------------------------------------------------------
def _objects(plan: StackPlan, kind: str) -> dict:
    return {obj["name"]: obj for obj in getattr(plan, kind)}


@pytest.mark.parametrize("name", [n for n in golden.positive_names() if n not in REFUSED])
def test_created_secrets_and_configs_match_docker(name):
    gold = _golden(name)
    plan = _plan(name)
    config = _loaded(name).config
    for kind in ("secrets", "configs"):
        ours = _objects(plan, kind)
        created = {n: o for n, o in ours.items() if not o.get("external")}
        external = sorted(n for n, o in ours.items() if o.get("external"))
        assert sorted(created) == sorted(gold[kind]), f"{name} {kind}"
        assert external == sorted(gold["external"].get(kind, [])), f"{name} external {kind}"
        for obj_name, obj in created.items():
            assert set(obj) == {"name", "labels", "data"}, (name, obj_name)
            assert set(gold[kind][obj_name]) <= {"Labels", "Data"}, (name, obj_name)   # no driver/templating
            assert obj["labels"] == gold[kind][obj_name].get("Labels", {}), (name, kind, obj_name)
            data = base64.b64decode(obj["data"])
            key = next(k for k, v in config[kind].items() if (v.get("name") or f"corpus_{k}") == obj_name)
            assert data == Path(config[kind][key]["file"]).read_bytes(), (name, kind, obj_name)
            if kind == "configs":       # the API returns a config's data; never a secret's
                assert data.decode() == gold[kind][obj_name]["Data"], (name, obj_name)
        for obj in ours.values():
            if obj.get("external"):
                assert obj == {"name": obj["name"], "external": True}


def test_the_corpus_has_file_and_external_secrets_and_configs():
    assert _objects(_plan("secrets-sample"), "secrets")        # file secrets
    assert _objects(_plan("atsea"), "secrets")                 # external secrets
    assert _objects(_plan("swarmprom"), "configs")             # file configs


# -- negative corpus files -----------------------------------------------------------------------
NEGATIVE = {
    # name: (where swarmpy refuses it, what its message and docker's both name, the difference or None)
    "bad-interpolation": ("load", None, None),          # None: the same text as docker's
    "required-variable": ("load", None, None),
    "version-mismatch": ("load", None, None),
    "volumes-from": ("load", None, None),
    "undefined-network": ("convert", None, None),
    "undefined-secret": ("convert", None, None),
    "typo-key": ("load", ("services.web.deploy", "replica", "is not allowed"),
                 "swarmpy's schema messages quote the key, list the allowed ones and suggest the "
                 "nearest (docker: 'services.web.deploy Additional property replica is not allowed')"),
    "wrong-type": ("load", ("services.web.deploy.replicas", "integer"),
                   "docker says 'must be a integer' (sic); swarmpy 'must be an integer (got \"two\")'"),
    "replicas-global": ("convert", ("agent", "replicas can only be used with replicated"),
                        "swarmpy's text names the key services.agent.deploy.replicas"),
    "dnsrr-ingress": ("convert", ("web", "port published with ingress mode can't be used with dnsrr mode"),
                      "docker's engine refuses it at service create; swarmpy's converter refuses it "
                      "before anything is sent, naming services.web.deploy.endpoint_mode (the manager "
                      "refuses it too)"),
}


def _negative_files(name: str) -> list[str]:
    files = [golden.NEGATIVE_DIR / f"{name}.yml", golden.NEGATIVE_DIR / f"{name}.override.yml"]
    return [str(f) for f in files if f.exists()]


def _recording_env() -> dict:
    # every golden repeats record_golden.py's ENV, the only variables docker's CLI saw
    return _golden(golden.positive_names()[0])["env"]


def test_every_negative_file_is_listed():
    assert sorted(NEGATIVE) == golden.negative_names()


@pytest.mark.parametrize("name", sorted(NEGATIVE))
def test_negative_file_fails_as_in_docker(name):
    stage, shared, difference = NEGATIVE[name]
    docker = golden.docker_error(name)
    assert docker["deploy"]["status"] != 0
    # `docker stack config` only loads: what it accepts must load here too and fail in convert
    assert (docker["config"]["status"] != 0) == (stage == "load"), name
    loaded = None
    with pytest.raises(StackFileError) as caught:
        loaded = load(_negative_files(name), env=_recording_env())
        convert(loaded, golden.STACK)
    assert (loaded is None) == (stage == "load"), f"{name}: expected to fail in {stage}"
    ours, theirs = caught.value.detail, docker["deploy"]["message"]
    if shared is None:
        assert ours == theirs
    else:
        assert difference
        for text in shared:
            assert text in ours and text in theirs, (name, text, ours, theirs)


# -- secrets and configs: docker's rules one by one -----------------------------------------------
def _convert_text(text: str, tmp_path: Path, files: dict | None = None) -> StackPlan:
    for name, data in (files or {}).items():
        (tmp_path / name).write_bytes(data)
    return convert(load_text([("stack.yml", text)], env={}, working_dir=str(tmp_path)), "st")


SECRETS_STACK = """
version: "3.8"
services:
  web:
    image: nginx:1.25
    secrets:
      - db
      - source: api
        target: api_key
        uid: "100"
        gid: "101"
        mode: 0400
      - outside
    configs:
      - site
      - source: fixed
        target: /etc/nginx/nginx.conf
secrets:
  db:
    file: ./db.txt
    labels: [team=data]
  api:
    file: ./api.txt
    name: my-api-key
  outside:
    external: true
    name: prod_outside
  unused:
    file: ./db.txt
configs:
  site:
    file: site.conf
  fixed:
    external: true
"""


def test_secrets_and_configs_become_objects_and_refs(tmp_path):
    plan = _convert_text(SECRETS_STACK, tmp_path, {"db.txt": b"pw\n", "api.txt": b"\x00\xffkey",
                                                   "site.conf": b"server {}"})
    ns = {"com.docker.stack.namespace": "st"}
    assert plan.secrets == [
        {"name": "my-api-key", "labels": ns, "data": base64.b64encode(b"\x00\xffkey").decode()},
        {"name": "st_db", "labels": {"team": "data", **ns}, "data": base64.b64encode(b"pw\n").decode()},
        {"name": "prod_outside", "external": True},
        {"name": "st_unused", "labels": ns, "data": base64.b64encode(b"pw\n").decode()},   # docker creates it too
    ]
    assert plan.configs == [{"name": "fixed", "external": True},
                            {"name": "st_site", "labels": ns, "data": base64.b64encode(b"server {}").decode()}]
    web = plan.services[0]
    assert web["secrets"] == [
        {"source": "st_db", "target": "db", "uid": "0", "gid": "0", "mode": 0o444},
        {"source": "my-api-key", "target": "api_key", "uid": "100", "gid": "101", "mode": 0o400},
        {"source": "prod_outside", "target": "outside", "uid": "0", "gid": "0", "mode": 0o444}]
    assert web["configs"] == [
        {"source": "st_site", "target": "site", "uid": "0", "gid": "0", "mode": 0o444},
        {"source": "fixed", "target": "/etc/nginx/nginx.conf", "uid": "0", "gid": "0", "mode": 0o444}]
    parsed = parse_service_spec(web)           # the manager takes them as they are
    assert [r.source for r in parsed.secrets] == ["st_db", "my-api-key", "prod_outside"]


@pytest.mark.parametrize("kind", ["secret", "config"])
def test_an_undefined_reference_is_dockers_error(kind, tmp_path):
    text = f"version: '3.8'\nservices:\n  web:\n    image: nginx\n    {kind}s: [nope]\n"
    with pytest.raises(StackFileError) as caught:
        _convert_text(text, tmp_path)
    assert str(caught.value) == f'service web: undefined {kind} "nope"'


def test_two_refs_with_one_target_is_dockers_error(tmp_path):
    text = ("version: '3.8'\nservices:\n  web:\n    image: nginx\n    secrets:\n      - a\n"
            "      - {source: b, target: a}\nsecrets:\n  a: {external: true}\n  b: {external: true}\n")
    with pytest.raises(StackFileError, match="^service web: duplicate secret target for b not allowed$"):
        _convert_text(text, tmp_path)


def test_a_secret_from_the_environment_is_refused_clearly(tmp_path):
    # compose-spec (no version:) allows `environment:`; docker's stack deploy has no such source
    text = "services:\n  web:\n    image: nginx\n    secrets: [token]\nsecrets:\n  token:\n    environment: TOKEN\n"
    with pytest.raises(StackFileError, match=r"^secrets\.token\.environment: a secret from an environment "
                                             r"variable is not supported by stack deploy; use file: or "
                                             r"external: true$"):
        _convert_text(text, tmp_path)


def test_a_missing_file_is_gos_open_error(tmp_path):
    text = "version: '3.8'\nservices:\n  web:\n    image: nginx\nconfigs:\n  c:\n    file: ./gone.conf\n"
    with pytest.raises(StackFileError) as caught:
        _convert_text(text, tmp_path)
    assert str(caught.value) == f"configs.c.file: open {tmp_path}/gone.conf: no such file or directory"


def test_a_secret_driver_is_refused(tmp_path):
    text = "version: '3.8'\nservices:\n  web:\n    image: nginx\nsecrets:\n  s:\n    driver: vault\n"
    with pytest.raises(StackFileError, match=r"^secrets\.s\.driver: secret drivers are not supported"):
        _convert_text(text, tmp_path)



# -- docker's texts and quirks the corpus does not reach ------------------------------------------
def _one_service(tmp_path: Path, body: str, top: str = "") -> dict:
    text = f"version: '3.8'\nservices:\n  web:\n    image: nginx\n{body}{top}"
    return _convert_text(text, tmp_path).services[0]


@pytest.mark.parametrize("body,message", [
    ("    deploy: {mode: daemon}\n", "service web: Unknown mode: daemon"),
    ("    restart: sometimes\n", "service web: unknown restart policy: sometimes"),
    ("    volumes: ['data:/data']\n", 'service web: undefined volume "data"'),
])
def test_dockers_texts(tmp_path, body, message):
    with pytest.raises(StackFileError) as caught:
        _one_service(tmp_path, body)
    assert str(caught.value) == message


def test_the_restart_key_counts_without_a_restart_policy(tmp_path):
    assert _one_service(tmp_path, "    restart: on-failure:3\n")["restart_policy"] == \
        {"condition": "on-failure", "max_attempts": 3}
    assert _one_service(tmp_path, "    restart: unless-stopped\n")["restart_policy"] == {"condition": "any"}
    assert "restart_policy" not in _one_service(tmp_path, "    restart: 'no'\n")    # swarm's default
    # an empty deploy.restart_policy is still a policy: the key is not read (docker's order)
    assert _one_service(tmp_path, "    restart: 'no'\n    deploy: {restart_policy: {}}\n")["restart_policy"] == \
        {"condition": "any"}


def test_anonymous_volumes_lose_volume_options_as_in_docker(tmp_path):
    mounts = _one_service(tmp_path, "    volumes:\n      - {type: volume, target: /a, volume: {nocopy: true}}\n"
                                    "      - {type: volume, source: v, target: /b, volume: {nocopy: true},"
                                    " consistency: cached}\n", "volumes:\n  v: {}\n")["mounts"]
    assert "volume_nocopy" not in mounts[0] and mounts[0]["source"] == ""
    assert mounts[1]["volume_nocopy"] is True and mounts[1]["consistency"] == "cached"


def test_a_secret_without_a_file_says_so(tmp_path):
    text = "version: '3.8'\nservices:\n  web:\n    image: nginx\nsecrets:\n  s:\n    labels: [a=b]\n"
    with pytest.raises(StackFileError, match=r"^secrets\.s: no file given; use file: PATH or external: true$"):
        _convert_text(text, tmp_path)


# -- networks: docker's rules one by one -------------------------------------------------------------
NETWORKS_STACK = """
version: "3.8"
services:
  web:
    image: nginx
    networks:
      front:
        aliases: [www, site]
      back:
    deploy:
      endpoint_mode: DNSRR
  db:
    image: postgres
    networks: [back, shared]
  lone:
    image: busybox
networks:
  front:
    attachable: true
    internal: true
    labels: [team=web]
    driver_opts:
      multicast: "false"
      encrypted: "yes"
    ipam:
      config:
        - subnet: 10.9.8.0/24
  back:
    name: backend-net
  shared:
    external: true
    name: common
  unused: {}
"""


def test_networks_become_create_bodies_and_attachments(tmp_path):
    plan = _convert_text(NETWORKS_STACK, tmp_path)
    ns = {"com.docker.stack.namespace": "st"}
    assert plan.networks == [
        {"name": "backend-net", "driver": "overlay", "labels": ns, "attachable": False, "internal": False,
         "options": {}},
        {"name": "common", "external": True},
        {"name": "st_default", "driver": "overlay", "labels": ns, "attachable": False, "internal": False,
         "options": {}},
        {"name": "st_front", "driver": "overlay", "labels": {"team": "web", **ns}, "attachable": True,
         "internal": True, "options": {"multicast": "false"}, "subnet": "10.9.8.0/24"},
    ]           # `unused` is declared but no service joins it: docker does not create it either
    services = {s["name"]: s for s in plan.services}
    assert services["st_web"]["networks"] == [
        {"target": "backend-net", "aliases": ["web"]},
        {"target": "st_front", "aliases": ["www", "site", "web"]}]     # the file's aliases, then the service
    assert services["st_web"]["endpoint_mode"] == "dnsrr"
    assert services["st_db"]["networks"] == [{"target": "backend-net", "aliases": ["db"]},
                                             {"target": "common", "aliases": ["db"]}]
    assert services["st_lone"]["networks"] == [{"target": "st_default", "aliases": ["lone"]}]
    assert "endpoint_mode" not in services["st_db"]
    assert plan.warnings == ["Ignoring driver_opts encrypted of network st_front: swarmpy's overlay takes "
                             "multicast only (no encryption, no other driver options)"]
    for spec in plan.services:
        parse_service_spec(spec)            # the manager takes them as they are


def test_a_declared_default_network_is_used(tmp_path):
    plan = _convert_text("version: '3.8'\nservices:\n  web: {image: nginx}\n"
                         "networks:\n  default: {external: true, name: outside}\n", tmp_path)
    assert plan.networks == [{"name": "outside", "external": True}]
    assert plan.services[0]["networks"] == [{"target": "outside", "aliases": ["web"]}]


def test_an_undeclared_network_is_dockers_error(tmp_path):
    text = "version: '3.8'\nservices:\n  web:\n    image: nginx\n    networks: [foo]\n"
    with pytest.raises(StackFileError) as caught:
        _convert_text(text, tmp_path)
    assert str(caught.value) == 'service web: undefined network "foo"'


@pytest.mark.parametrize("top, message", [
    ("  n: {driver: bridge}\n",
     r"^networks\.n\.driver: network st_n asks for driver 'bridge', but a stack's networks span the swarm: "
     r"swarmpy makes overlay networks only; use driver: overlay \(or leave driver out\)$"),
    ("  n: {driver_opts: {multicast: maybe}}\n",
     r"^networks\.n\.driver_opts\.multicast: 'maybe' is invalid; use true or false$"),
    ("  n: {ipam: {config: [{subnet: 10.1.0.0/24}, {subnet: 10.2.0.0/24}]}}\n",
     r"^networks\.n\.ipam\.config: swarmpy's networks have one subnet; give one entry$"),
    ("  n: {ipam: {driver: calico}}\n", r"^networks\.n\.ipam\.driver: IPAM driver 'calico' is not supported"),
    ("  n: {external: true, name: host}\n", r"^networks\.n: the engine's 'host' network is not a swarm network"),
])
def test_networks_swarmpy_cannot_make_are_refused_naming_the_key(tmp_path, top, message):
    text = f"version: '3.8'\nservices:\n  web:\n    image: nginx\n    networks: [n]\nnetworks:\n{top}"
    with pytest.raises(StackFileError, match=message):
        _convert_text(text, tmp_path)


def test_an_explicit_overlay_driver_and_a_gateway(tmp_path):
    text = ("services:\n  web:\n    image: nginx\n    networks: [n]\nnetworks:\n  n:\n    driver: overlay\n"
            "    ipam:\n      config:\n        - subnet: 10.3.0.0/16\n          gateway: 10.3.0.1\n")
    plan = _convert_text(text, tmp_path)
    assert plan.networks[0]["subnet"] == "10.3.0.0/16" and plan.networks[0]["driver"] == "overlay"
    assert plan.warnings == ["Ignoring ipam gateway of network st_n: swarmpy takes the subnet only"]


@pytest.mark.parametrize("mode", ["vip", "dnsrr"])
def test_endpoint_mode_is_converted(tmp_path, mode):
    assert _one_service(tmp_path, f"    deploy: {{endpoint_mode: {mode}}}\n")["endpoint_mode"] == mode
