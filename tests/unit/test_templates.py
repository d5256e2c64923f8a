"""worker/templates.py: swarm's service templates, expanded per task."""
from __future__ import annotations

import pytest

from worker import templates

TASK = {"id": "t1", "service_id": "s1", "service_name": "web", "slot": 3, "node_id": "n1",
        "spec": {"labels": {"tier": "front"}, "hostname": "{{.Node.Hostname}}-{{.Task.Slot}}",
                 "env": ["ME={{.Task.Name}}", "SVC={{ .Service.Name }}/{{.Service.ID}}", "PLAIN",
                         'TIER={{index .Service.Labels "tier"}}', "NODE={{.Node.ID}}"],
                 "mounts": [{"type": "volume", "source": "data-{{.Task.Slot}}", "target": "/d/{{.Service.Name}}"}]}}


def test_env_hostname_and_mounts_are_expanded_per_task():
    ctx = templates.context(TASK, "n1", "host-a")
    spec = templates.expand_spec(TASK["spec"], ctx)
    assert spec["hostname"] == "host-a-3"
    assert spec["env"] == ["ME=web.3.t1", "SVC=web/s1", "PLAIN", "TIER=front", "NODE=n1"]
    assert spec["mounts"][0]["source"] == "data-3" and spec["mounts"][0]["target"] == "/d/web"
    assert TASK["spec"]["hostname"] == "{{.Node.Hostname}}-{{.Task.Slot}}"      # the stored spec is left alone


def test_a_global_task_has_no_slot_and_names_itself_by_node():
    task = dict(TASK, slot=None)
    ctx = templates.context(task, "n1", "host-a")
    assert templates.expand("{{.Task.Slot}}|{{.Task.Name}}", ctx) == "|web.n1.t1"


def test_an_unknown_field_fails_with_gos_text():
    ctx = templates.context(TASK, "n1", "host-a")
    with pytest.raises(templates.TemplateError, match="can't evaluate field Nope"):
        templates.expand("{{.Service.Nope}}", ctx)
