"""swarmpy/spec.py: every bad field gives a SpecError that names that field."""
from __future__ import annotations

import dataclasses
import json

import pytest

from swarmpy import defaults
from swarmpy.models import (Healthcheck, LogDriver, Mount, PortConfig, Resources, RestartPolicy, ServiceSpec,
                            Ulimit, UpdateConfig, from_dict, to_dict)
from swarmpy.spec import SpecError, parse_service_spec, parse_service_spec_dict


def base(**overrides) -> dict:
    data = {"name": "web", "image": "nginx:alpine"}
    data.update(overrides)
    return data


def bad(data, field: str, *fragments: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_service_spec(data)
    err = info.value
    assert err.field == field, f"expected field {field!r}, got {err.field!r}: {err}"
    message = str(err)
    assert message.startswith(f"invalid service spec: {field}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return err


def _exact(spec: ServiceSpec) -> str:
    """The spec as stored, with its types: 0 and 0.0 (or 1 and True) differ here."""
    return json.dumps(to_dict(spec), sort_keys=True)


@pytest.mark.parametrize("given", [
    {"command": []}, {"env": []}, {"labels": {}}, {"container_labels": {}}, {"replicas": defaults.REPLICAS},
    {"max_concurrent": 0}, {"constraints": []}, {"preferences": []}, {"max_replicas_per_node": 0},
    {"stop_grace_period": defaults.STOP_GRACE_PERIOD_S}, {"stop_grace_period": int(defaults.STOP_GRACE_PERIOD_S)},
    {"reservations": {}}, {"limits": {}}, {"restart_policy": {}}, {"update_config": {}}, {"rollback_config": {}},
    {"entrypoint": []}, {"hostname": ""}, {"tty": False}, {"init": None}, {"hosts": []}, {"sysctls": {}},
    {"ulimits": []}, {"cap_add": []}, {"healthcheck": None}, {"log_driver": None}, {"mounts": []},
    {"ports": []}, {"secrets": []}, {"networks": []}, {"endpoint_mode": "vip"}])
def test_a_field_left_out_is_what_its_empty_form_validates_to(given):
    # parse_service_spec skips validating what is not given: its default must be exactly
    # what validating the empty form gives, and the stored form must read back the same.
    assert _exact(parse_service_spec(base())) == _exact(parse_service_spec(base(**given)))
    stored = to_dict(parse_service_spec(base()))
    assert _exact(parse_service_spec(stored)) == _exact(parse_service_spec(base()))


# One valid, non-default value per ServiceSpec field (name and image aside).
GIVEN_ALONE = {
    "command": ["sh"], "env": ["A=1"], "labels": {"k": "v"}, "container_labels": {"k": "v"},
    "mode": "global", "replicas": 3, "constraints": ["node.role==manager"],
    "preferences": ["spread=node.labels.zone"], "max_replicas_per_node": 2,
    "reservations": {"nano_cpus": 1}, "limits": {"memory_bytes": 1}, "restart_policy": {"condition": "none"},
    "stop_grace_period": 3, "pull": "never", "update_config": {"parallelism": 2},
    "rollback_config": {"parallelism": 2}, "entrypoint": ["sh"], "hostname": "h", "user": "u",
    "working_dir": "/w", "stop_signal": "SIGINT", "tty": True, "open_stdin": True, "read_only": True,
    "init": True, "hosts": ["10.0.0.2 db"], "dns_nameservers": ["10.0.0.1"], "dns_search": ["example"],
    "dns_options": ["ndots:2"], "sysctls": {"net.core.somaxconn": "1024"},
    "ulimits": [{"name": "nofile", "soft": 1, "hard": 2}], "cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"],
    "healthcheck": {"test": ["CMD", "true"]}, "log_driver": {"name": "json-file"},
    "mounts": [{"type": "volume", "source": "vol", "target": "/d"}], "ports": [{"target": 80}],
    "secrets": [{"source": "s"}], "configs": [{"source": "c"}], "networks": [{"target": "n"}],
    "endpoint_mode": "dnsrr",
}


def test_every_field_given_alone_is_taken():
    # parse_service_spec skips the container fields when none is given (which ones, it
    # reads off ServiceSpec's field order): a field placed or handled wrongly would be
    # dropped silently when sent alone.
    assert set(GIVEN_ALONE) | {"name", "image", "max_concurrent"} == set(ServiceSpec.__dataclass_fields__)
    default = to_dict(parse_service_spec(base()))
    for field, value in GIVEN_ALONE.items():
        assert to_dict(parse_service_spec(base(**{field: value})))[field] != default[field], field
    job = parse_service_spec(base(mode="replicated-job", max_concurrent=2))
    assert job.max_concurrent == 2


def test_minimal_spec_gets_swarm_defaults():
    spec = parse_service_spec(base())
    assert isinstance(spec, ServiceSpec)
    assert spec.name == "web" and spec.image == "nginx:alpine"
    assert spec.mode == "replicated" and spec.replicas == 1
    assert spec.restart_policy == RestartPolicy("any", 5.0, 0, 0.0)
    assert spec.stop_grace_period == 10.0 and isinstance(spec.stop_grace_period, float)
    assert spec.pull == defaults.PULL_POLICY
    assert spec.reservations == Resources() and spec.limits == Resources()
    assert spec.constraints == [] and spec.preferences == [] and spec.max_replicas_per_node == 0


def test_full_spec_round_trips():
    data = base(command=["sh", "-c", "sleep 1"], env=["A=1", "B="], labels={"x": "y"},
                container_labels={"c": "d"}, mode="replicated", replicas=3,
                constraints=["node.role==manager", "node.labels.zone != a"],
                preferences=["spread=node.labels.zone"], max_replicas_per_node=2,
                reservations={"nano_cpus": 500_000_000, "memory_bytes": 64 << 20,
                              "generic": {"NVIDIA-GPU": 1}},
                limits={"nano_cpus": 10 ** 9, "memory_bytes": 128 << 20},
                restart_policy={"condition": "on-failure", "delay": 1, "max_attempts": 3, "window": 60},
                stop_grace_period=2, pull="always")
    spec = parse_service_spec(data)
    assert spec.replicas == 3
    assert spec.reservations.generic == {"NVIDIA-GPU": 1}
    assert spec.restart_policy == RestartPolicy("on-failure", 1, 3, 60)
    assert spec.stop_grace_period == 2.0
    again = from_dict(ServiceSpec, to_dict(spec))
    assert again == spec


def test_global_mode():
    spec = parse_service_spec(base(mode="global"))
    assert spec.mode == "global"
    assert parse_service_spec(base(mode="global", replicas=1)).mode == "global"


@pytest.mark.parametrize("data, field, fragments", [
    (base(replicas=-1), "replicas", ["non-negative integer", "-1"]),
    (base(replicas="3"), "replicas", ["non-negative integer", "'3'"]),
    (base(replicas=2.0), "replicas", ["non-negative integer"]),
    (base(replicas=True), "replicas", ["non-negative integer", "True"]),
    (base(replicas=None), "replicas", ["non-negative integer"]),
    (base(mode="global", replicas=3), "replicas", ["replicated or replicated-job mode"]),
    (base(mode="global", replicas=0), "replicas", ["replicated or replicated-job mode"]),
    (base(mode="global-job", replicas=2), "replicas", ["replicated or replicated-job mode"]),
    (base(mode="daemonset"), "mode", ["replicated, global, replicated-job, global-job"]),
    (base(max_concurrent=2), "max_concurrent", ["only be used with replicated-job mode"]),
    (base(reservations={"memory_bytes": "64M"}), "reservations.memory_bytes", ["non-negative integer"]),
    (base(reservations={"memory_bytes": -1}), "reservations.memory_bytes", ["-1"]),
    (base(limits={"memory_bytes": 1.5}), "limits.memory_bytes", ["non-negative integer"]),
    (base(reservations={"nano_cpus": "0.5"}), "reservations.nano_cpus", []),
    (base(reservations={"cpus": 1}), "reservations.cpus", ["unknown field"]),
    (base(reservations=[]), "reservations", ["an object"]),
    (base(reservations={"generic": {"NVIDIA-GPU": "1"}}), "reservations.generic.NVIDIA-GPU", []),
    (base(reservations={"generic": {"NVIDIA-GPU": -2}}), "reservations.generic.NVIDIA-GPU", []),
    (base(reservations={"generic": ["NVIDIA-GPU"]}), "reservations.generic", []),
    (base(limits={"generic": {"NVIDIA-GPU": 1}}), "limits.generic", ["only be reserved"]),
    (base(replica=3), "replica", ["unknown field", "replicas"]),
    (base(constraints=["node.role=manager"]), "constraints[0]", ["invalid", "node.role==manager"]),
    (base(constraints=["node.role==manager", "node.color==red"]), "constraints[1]", ["not supported"]),
    (base(constraints=["node.labels.==x"]), "constraints[0]", []),
    (base(constraints="node.role==manager"), "constraints", ["list of strings"]),
    (base(constraints=[1]), "constraints[0]", ["a string"]),
    (base(preferences=["zone"]), "preferences[0]", ["spread=node.labels.KEY"]),
    (base(restart_policy={"condition": "always"}), "restart_policy.condition",
     ["none, on-failure, any", "'always'"]),
    (base(restart_policy={"delay": -1}), "restart_policy.delay", ["negative"]),
    (base(restart_policy={"delay": "5s"}), "restart_policy.delay", ["number of seconds"]),
    (base(restart_policy={"window": -0.5}), "restart_policy.window", ["negative"]),
    (base(restart_policy={"max_attempts": -1}), "restart_policy.max_attempts", []),
    (base(restart_policy={"max_attempts": 1.5}), "restart_policy.max_attempts", []),
    (base(restart_policy="any"), "restart_policy", ["an object"]),
    (base(stop_grace_period=-1), "stop_grace_period", ["negative", "-1"]),
    (base(stop_grace_period="10s"), "stop_grace_period", ["number of seconds"]),
    (base(stop_grace_period=True), "stop_grace_period", []),
    (base(name="-web"), "name", ["invalid"]),
    (base(name="web service"), "name", ["invalid"]),
    (base(name="a" * 64), "name", ["63 characters"]),
    (base(name="wéb"), "name", []),
    (base(name=5), "name", ["a string"]),
    (base(name=""), "name", ["required"]),
    ({"image": "nginx"}, "name", ["required"]),
    (base(image=""), "image", ["required"]),
    (base(image=["nginx"]), "image", ["image reference"]),
    (base(command="sleep 1"), "command", ["list of strings"]),
    (base(command=["sh", 5]), "command[1]", ["a string"]),
    (base(constraints=["node.role==manager", None]), "constraints[1]", ["a string"]),
    (base(env=["A=1", "=x"]), "env[1]", ["KEY=VALUE"]),
    (base(env=["A=1", ""]), "env[1]", []),
    (base(labels={"a": 1}), "labels.a", ["a string"]),
    (base(container_labels=["a=b"]), "container_labels", []),
    (base(max_replicas_per_node=-1), "max_replicas_per_node", []),
    (base(pull="sometimes"), "pull", ["always, missing, never"]),
])
def test_bad_field_is_named(data, field, fragments):
    err = bad(data, field, *fragments)
    assert isinstance(err, ValueError)


def test_non_object_spec():
    bad(["web"], "spec", "JSON object")
    bad(None, "spec")


def test_unknown_field_reported_even_when_others_are_fine():
    err = bad(base(replicas=2, healthchek={}), "healthchek", "unknown field")
    assert "known fields are" in str(err)


def test_name_edge_cases_accepted():
    for name in ("a", "a" * 63, "web_1.v-2", "9lives"):
        assert parse_service_spec(base(name=name)).name == name


def test_name_with_trailing_newline_is_rejected():
    # `$` in a Python regex also matches before a final newline.
    bad(base(name="web\n"), "name", "invalid")


def test_zero_values_are_allowed():
    spec = parse_service_spec(base(replicas=0, stop_grace_period=0,
                                   restart_policy={"delay": 0, "window": 0, "max_attempts": 0}))
    assert spec.replicas == 0 and spec.stop_grace_period == 0.0
    assert spec.restart_policy.delay == 0


def test_env_without_value_passes_through():
    # docker passes a bare KEY through from the client environment
    assert parse_service_spec(base(env=["KEY"])).env == ["KEY"]


def test_unknown_restart_policy_field_is_named():
    bad(base(restart_policy={"condition": "none", "max_attempt": 3}), "restart_policy.max_attempt",
        "unknown field")


def test_global_mode_accepts_null_replicas():
    assert parse_service_spec(base(mode="global", replicas=None)).mode == "global"


@pytest.mark.parametrize("data, field", [
    (base(stop_grace_period=float("nan")), "stop_grace_period"),
    (base(stop_grace_period=float("inf")), "stop_grace_period"),
    (base(restart_policy={"delay": float("nan")}), "restart_policy.delay"),
    (base(restart_policy={"window": float("inf")}), "restart_policy.window"),
])
def test_non_finite_numbers_are_rejected(data, field):
    bad(data, field)


# -- docker's ContainerSpec fields, update_config and rollback_config -----------------------
FULL_CONTAINER = dict(
    entrypoint=["/bin/sh", "-c"], hostname="web-host", user="1000:1000", working_dir="/srv",
    stop_signal="SIGINT", tty=True, open_stdin=True, read_only=True, init=True,
    hosts=["10.0.0.2 db db.local", "::1 ip6"], dns_nameservers=["10.0.0.53"], dns_search=["example.com"],
    dns_options=["ndots:2"], sysctls={"net.core.somaxconn": "1024"},
    ulimits=[{"name": "nofile", "soft": 1024, "hard": 2048}, {"name": "core", "soft": -1, "hard": -1}],
    cap_add=["NET_ADMIN"], cap_drop=["CAP_MKNOD", "ALL"],
    healthcheck={"test": ["CMD-SHELL", "true"], "interval": 0.5, "timeout": 2, "start_period": 1,
                 "start_interval": 0.1, "retries": 3},
    log_driver={"name": "json-file", "options": {"max-size": "1m"}},
    mounts=[{"type": "volume", "source": "data", "target": "/data", "volume_labels": {"a": "b"},
             "volume_driver": "local", "volume_driver_options": {"o": "x"}, "volume_nocopy": True},
            {"type": "bind", "source": "/tmp", "target": "/host", "read_only": True,
             "bind_propagation": "rslave", "consistency": "cached"},
            {"type": "tmpfs", "target": "/scratch", "tmpfs_size_bytes": 1 << 20, "tmpfs_mode": 0o1777},
            {"target": "/anon"}],
    ports=[{"target": 80, "published": 8080}, {"target": 53, "published": 53, "protocol": "udp", "mode": "host"},
           {"target": 9000}],
    update_config={"parallelism": 2, "delay": 1.5, "failure_action": "rollback", "monitor": 10,
                   "max_failure_ratio": 0.25, "order": "start-first"},
    rollback_config={"parallelism": 0, "failure_action": "continue"},
)


def test_container_fields_default_to_docker_s():
    spec = parse_service_spec(base())
    assert spec.entrypoint == [] and spec.hostname == spec.user == spec.working_dir == spec.stop_signal == ""
    assert not (spec.tty or spec.open_stdin or spec.read_only) and spec.init is None
    assert spec.hosts == spec.dns_nameservers == spec.dns_search == spec.dns_options == []
    assert spec.sysctls == {} and spec.ulimits == [] and spec.cap_add == spec.cap_drop == []
    assert spec.healthcheck is None and spec.log_driver is None and spec.mounts == [] and spec.ports == []
    swarmkit = UpdateConfig(parallelism=1, delay=0.0, failure_action="pause", monitor=5.0,
                            max_failure_ratio=0.0, order="stop-first")
    assert spec.update_config == swarmkit and spec.rollback_config == swarmkit


def test_full_container_spec_round_trips():
    spec = parse_service_spec(base(**FULL_CONTAINER))
    assert spec.entrypoint == ["/bin/sh", "-c"] and spec.init is True and spec.tty is True
    assert spec.ulimits == [Ulimit("nofile", 1024, 2048), Ulimit("core", -1, -1)]
    assert spec.healthcheck == Healthcheck(["CMD-SHELL", "true"], 0.5, 2.0, 1.0, 0.1, 3)
    assert spec.log_driver == LogDriver("json-file", {"max-size": "1m"})
    assert spec.mounts[0] == Mount(target="/data", source="data", volume_labels={"a": "b"},
                                   volume_driver="local", volume_driver_options={"o": "x"}, volume_nocopy=True)
    assert spec.mounts[2].tmpfs_mode == 0o1777 and spec.mounts[3] == Mount(target="/anon")
    assert spec.ports == [PortConfig(80, 8080, "tcp", "ingress"), PortConfig(53, 53, "udp", "host"),
                          PortConfig(9000, 0, "tcp", "ingress")]
    assert spec.update_config == UpdateConfig(2, 1.5, "rollback", 10.0, 0.25, "start-first")
    assert spec.rollback_config.parallelism == 0 and spec.rollback_config.failure_action == "continue"
    again = from_dict(ServiceSpec, to_dict(spec))
    assert again == spec
    assert parse_service_spec(to_dict(spec)) == spec


def test_spec_stored_before_container_fields_still_loads():
    old = {"name": "web", "image": "busybox", "command": [], "env": [], "labels": {}, "container_labels": {},
           "mode": "replicated", "replicas": 2, "constraints": [], "preferences": [], "max_replicas_per_node": 0,
           "reservations": {"nano_cpus": 0, "memory_bytes": 0, "generic": {}},
           "limits": {"nano_cpus": 0, "memory_bytes": 0, "generic": {}},
           "restart_policy": {"condition": "any", "delay": 5.0, "max_attempts": 0, "window": 0.0},
           "stop_grace_period": 10.0, "pull": "missing", "update_parallelism": 3}
    loaded = from_dict(ServiceSpec, old)
    assert loaded.replicas == 2 and loaded.mounts == [] and loaded.update_config == UpdateConfig()
    # posted back as it was stored (service update from an older client): its parallelism is kept
    assert parse_service_spec(old).update_config.parallelism == 3


def test_healthcheck_forms():
    for test in ([], ["NONE"], ["CMD", "true"], ["CMD", "sh", "-c", "x"], ["CMD-SHELL", "exit 0"]):
        assert parse_service_spec(base(healthcheck={"test": test})).healthcheck.test == test
    assert parse_service_spec(base(healthcheck=None)).healthcheck is None
    assert parse_service_spec(base(init=None, log_driver=None)).init is None


@pytest.mark.parametrize("data, field, fragments", [
    (base(entrypoint="sh -c"), "entrypoint", ["list of strings"]),
    (base(hostname=1), "hostname", ["a string"]),
    (base(working_dir="srv"), "working_dir", ["absolute path"]),
    (base(stop_signal="SIG TERM"), "stop_signal", ["SIGINT"]),
    (base(tty="yes"), "tty", ["true or false"]),
    (base(open_stdin=1), "open_stdin", ["true or false"]),
    (base(read_only=None), "read_only", ["true or false"]),
    (base(init="true"), "init", ["true or false"]),
    (base(hosts=["db:10.0.0.2"]), "hosts[0]", ["IP HOSTNAME"]),
    (base(hosts=["10.0.0.2"]), "hosts[0]", ["IP HOSTNAME"]),
    (base(dns_nameservers=["dns.example"]), "dns_nameservers[0]", ["not an IP address"]),
    (base(dns_search="example.com"), "dns_search", ["list of strings"]),
    (base(dns_options=[1]), "dns_options[0]", ["a string"]),
    (base(sysctls={"net.core.somaxconn": 1024}), "sysctls.net.core.somaxconn", ["a string"]),
    (base(ulimits={"nofile": 1}), "ulimits", ["list"]),
    (base(ulimits=[{"name": "files", "soft": 1, "hard": 1}]), "ulimits[0].name", ["nofile"]),
    (base(ulimits=[{"name": "nofile", "soft": 10, "hard": 5}]), "ulimits[0].soft", ["hard limit 5"]),
    (base(ulimits=[{"name": "nofile", "soft": "1", "hard": 5}]), "ulimits[0].soft", ["integer"]),
    (base(ulimits=[{"name": "nofile", "soft": 1}]), "ulimits[0].hard", ["integer"]),
    (base(ulimits=[{"name": "nofile", "soft": -2, "hard": -1}]), "ulimits[0].soft", ["-1"]),
    (base(ulimits=[{"name": "nofile", "soft": 1, "hard": 1, "max": 2}]), "ulimits[0].max", ["unknown field"]),
    (base(ulimits=[{"name": "nproc", "soft": 1, "hard": 1}] * 2), "ulimits[1].name", ["twice"]),
    (base(cap_add=["NET ADMIN"]), "cap_add[0]", ["capability"]),
    (base(cap_drop="ALL"), "cap_drop", ["list of strings"]),
    (base(healthcheck={"test": ["CMD-SHELL"]}), "healthcheck.test", ["CMD-SHELL"]),
    (base(healthcheck={"test": ["CMD"]}), "healthcheck.test", []),
    (base(healthcheck={"test": ["NONE", "x"]}), "healthcheck.test", []),
    (base(healthcheck={"test": ["curl", "x"]}), "healthcheck.test", ["\"CMD\""]),
    (base(healthcheck={"test": "curl x"}), "healthcheck.test", ["list of strings"]),
    (base(healthcheck={"interval": -1}), "healthcheck.interval", ["non-negative"]),
    (base(healthcheck={"timeout": "5s"}), "healthcheck.timeout", ["number of seconds"]),
    (base(healthcheck={"start_period": 0.0001}), "healthcheck.start_period", ["1ms"]),
    (base(healthcheck={"start_interval": float("inf")}), "healthcheck.start_interval", []),
    (base(healthcheck={"retries": -1}), "healthcheck.retries", []),
    (base(healthcheck={"cmd": "true"}), "healthcheck.cmd", ["unknown field", "test"]),
    (base(healthcheck="true"), "healthcheck", ["an object"]),
    (base(log_driver={"name": "json-file", "options": {"max-size": 1}}), "log_driver.options.max-size", []),
    (base(log_driver={"name": "json-file", "opts": {}}), "log_driver.opts", ["unknown field"]),
    (base(mounts={"target": "/x"}), "mounts", ["list"]),
    (base(mounts=[{"source": "x"}]), "mounts[0].target", ["required"]),
    (base(mounts=[{"target": "data"}]), "mounts[0].target", ["absolute path"]),
    (base(mounts=[{"target": "/x", "type": "npipe"}]), "mounts[0].type", ["volume, bind, tmpfs"]),
    (base(mounts=[{"target": "/x", "type": "bind"}]), "mounts[0].source", ["absolute host path"]),
    (base(mounts=[{"target": "/x", "type": "bind", "source": "rel"}]), "mounts[0].source", []),
    (base(mounts=[{"target": "/x", "type": "tmpfs", "source": "t"}]), "mounts[0].source", ["empty"]),
    (base(mounts=[{"target": "/x", "source": "a b"}]), "mounts[0].source", ["volume name"]),
    (base(mounts=[{"target": "/x", "type": "tmpfs", "volume_labels": {"a": "b"}}]),
     "mounts[0].volume_labels", ["mount type 'tmpfs'", "'volume'"]),
    (base(mounts=[{"target": "/x", "tmpfs_size_bytes": 10}]), "mounts[0].tmpfs_size_bytes", ["'tmpfs'"]),
    (base(mounts=[{"target": "/x", "bind_propagation": "rslave"}]), "mounts[0].bind_propagation", ["'bind'"]),
    (base(mounts=[{"target": "/x", "type": "bind", "source": "/", "bind_propagation": "up"}]),
     "mounts[0].bind_propagation", ["rprivate"]),
    (base(mounts=[{"target": "/x", "consistency": "eventual"}]), "mounts[0].consistency", ["cached"]),
    (base(mounts=[{"target": "/x", "read_only": "yes"}]), "mounts[0].read_only", ["true or false"]),
    (base(mounts=[{"target": "/x", "type": "tmpfs", "tmpfs_mode": 0o17777}]), "mounts[0].tmpfs_mode", []),
    (base(mounts=[{"target": "/x", "type": "tmpfs", "tmpfs_size_bytes": -1}]), "mounts[0].tmpfs_size_bytes", []),
    (base(mounts=[{"target": "/x", "volume_labels": ["a=b"]}]), "mounts[0].volume_labels", []),
    (base(mounts=[{"target": "/x"}, {"target": "/x", "type": "tmpfs"}]), "mounts[1].target", ["duplicate"]),
    (base(mounts=[{"target": "/x", "readonly": True}]), "mounts[0].readonly", ["unknown field", "read_only"]),
    (base(ports=[{"published": 80}]), "ports[0].target", ["port number"]),
    (base(ports=[{"target": 0}]), "ports[0].target", ["from 1 to 65535"]),
    (base(ports=[{"target": 80, "published": 70000}]), "ports[0].published", ["from 0 to 65535"]),
    (base(ports=[{"target": "80"}]), "ports[0].target", []),
    (base(ports=[{"target": 80, "protocol": "icmp"}]), "ports[0].protocol", ["tcp, udp, sctp"]),
    (base(ports=[{"target": 80, "mode": "vip"}]), "ports[0].mode", ["ingress, host"]),
    (base(ports=[{"target": 80, "published": 8080}, {"target": 81, "published": 8080}]),
     "ports[1].published", ["8080/tcp", "twice"]),
    (base(ports=[{"target": 80, "publish": 8080}]), "ports[0].publish", ["unknown field", "published"]),
    (base(update_config={"parallelism": -1}), "update_config.parallelism", []),
    (base(update_config={"delay": -1}), "update_config.delay", ["negative"]),
    (base(update_config={"monitor": "5s"}), "update_config.monitor", ["number of seconds"]),
    (base(update_config={"failure_action": "stop"}), "update_config.failure_action",
     ["pause, continue, rollback"]),
    (base(update_config={"order": "first"}), "update_config.order", ["stop-first, start-first"]),
    (base(update_config={"max_failure_ratio": 1.5}), "update_config.max_failure_ratio", ["between 0 and 1"]),
    (base(update_config={"max_failure_ratio": "0.5"}), "update_config.max_failure_ratio", ["a number"]),
    (base(update_config={"paralellism": 2}), "update_config.paralellism", ["unknown field", "parallelism"]),
    (base(update_config=2), "update_config", ["an object"]),
    (base(rollback_config={"failure_action": "rollback"}), "rollback_config.failure_action",
     ["pause, continue"]),
])
def test_bad_container_field_is_named(data, field, fragments):
    bad(data, field, *fragments)


@pytest.mark.parametrize("refs, field, text", [
    ([{"target": "x"}], "secrets[0].source", "must be the name of a secret"),
    ([{"source": "a", "bogus": 1}], "secrets[0].bogus", "unknown field"),
    ([{"source": "a"}, {"source": "a"}], "secrets[1].target", "used twice"),
    ([{"source": "a", "target": "/etc/pw"}], "secrets[0].target", "file name under /run/secrets"),
    ([{"source": "a", "target": "../pw"}], "secrets[0].target", "may not contain '..'"),
    ([{"source": "a", "mode": 99999}], "secrets[0].mode", "not a file mode"),
])
def test_secret_references_are_checked(refs, field, text):
    with pytest.raises(SpecError) as exc:
        parse_service_spec({"name": "s", "image": "i", "secrets": refs})
    assert exc.value.field == field and text in str(exc.value)


def test_secret_and_config_targets_default_to_the_source():
    spec = parse_service_spec({"name": "s", "image": "i", "secrets": [{"source": "pw"}],
                               "configs": [{"source": "cfg", "target": "/etc/app.conf", "mode": 0o440}]})
    assert [(r.source, r.target, r.uid, r.mode) for r in spec.secrets] == [("pw", "pw", "0", 0o444)]
    assert [(r.source, r.target, r.mode) for r in spec.configs] == [("cfg", "/etc/app.conf", 0o440)]


def test_a_log_driver_without_a_name_means_the_engines_default_with_options():
    spec = parse_service_spec({"name": "s", "image": "i", "log_driver": {"options": {"max-size": "1m"}}})
    assert spec.log_driver == LogDriver("", {"max-size": "1m"})


def test_to_dict_is_asdict_without_sharing_containers():
    spec = parse_service_spec(base(
        env=["A=1"], labels={"k": "v"}, reservations={"generic": {"gpu": 1}},
        healthcheck={"test": ["CMD", "true"]}, log_driver={"name": "json-file", "options": {"max-size": "1m"}},
        ports=[{"target": 80, "published": 8080}], mounts=[{"type": "volume", "source": "vol", "target": "/d"}],
        networks=[{"target": "net", "aliases": ["a"]}], ulimits=[{"name": "nofile", "soft": 1, "hard": 2}]))
    stored = to_dict(spec)
    assert stored == dataclasses.asdict(spec)
    assert list(stored) == [f.name for f in dataclasses.fields(ServiceSpec)]      # field order kept
    stored["env"].append("B=2")
    stored["labels"]["k2"] = "v2"
    stored["reservations"]["generic"]["gpu"] = 5
    stored["healthcheck"]["test"].append("x")
    stored["log_driver"]["options"].clear()
    stored["networks"][0]["aliases"].append("b")
    assert spec.env == ["A=1"] and spec.labels == {"k": "v"} and spec.reservations.generic == {"gpu": 1}
    assert spec.healthcheck.test == ["CMD", "true"] and spec.log_driver.options == {"max-size": "1m"}
    assert spec.networks[0].aliases == ["a"]


def test_to_dict_copies_a_value_of_another_type_than_its_annotation_whole():
    # to_dict copies a list[str] field shallowly; a value that is not a list still comes
    # out equal to asdict's and shares nothing with the model.
    spec = ServiceSpec(name="web", image="nginx")
    spec.env = ("A=1",)
    spec.labels = None
    spec.reservations = {"generic": [1]}
    stored = to_dict(spec)
    assert stored == dataclasses.asdict(spec)
    assert stored["reservations"]["generic"] is not spec.reservations["generic"]


@pytest.mark.parametrize("field", sorted(GIVEN_ALONE))
def test_the_dict_path_gives_the_stored_form_of_the_spec(field):
    # The update path validates into the dict form directly; it must be exactly what the
    # ServiceSpec path stores, types and field order included.
    data = base(**{field: GIVEN_ALONE[field]})
    via_spec = to_dict(parse_service_spec(data))
    via_dict = parse_service_spec_dict(data)
    assert json.dumps(via_dict) == json.dumps(via_spec)


def test_the_dict_path_shares_no_container_between_specs_or_with_the_defaults():
    first = parse_service_spec_dict(base())
    first["env"].append("A=1")
    first["reservations"]["generic"]["gpu"] = 1
    first["update_config"]["parallelism"] = 9
    second = parse_service_spec_dict(base())
    assert second == to_dict(parse_service_spec(base()))
    assert second["env"] == [] and second["reservations"]["generic"] == {}
    assert parse_service_spec(base()) == ServiceSpec(name="web", image="nginx:alpine")
    with pytest.raises(SpecError, match="env\\[0\\]"):
        parse_service_spec_dict(base(env=["=x"]))
