"""swarmpy/spec.py: every bad field gives a SpecError that names that field."""
from __future__ import annotations

import pytest

from swarmpy import defaults
from swarmpy.models import Resources, RestartPolicy, ServiceSpec, from_dict, to_dict
from swarmpy.spec import SpecError, parse_service_spec


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
    (base(mode="global", replicas=3), "replicas", ["replicated mode"]),
    (base(mode="global", replicas=0), "replicas", ["replicated mode"]),
    (base(mode="daemonset"), "mode", ["replicated or global"]),
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
    err = bad(base(replicas=2, healthcheck={}), "healthcheck", "unknown field")
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
