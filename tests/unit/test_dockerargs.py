"""worker/dockerargs.py: a spec's dict form as docker-SDK arguments."""
from __future__ import annotations

from swarmpy.models import ServiceSpec, to_dict
from swarmpy.spec import parse_service_spec
from worker import dockerargs


def test_empty_and_old_specs_pass_nothing_new():
    for spec in ({}, to_dict(ServiceSpec(name="web", image="busybox"))):
        config, host = dockerargs.container_config(spec), dockerargs.host_config(spec)
        assert config == {"entrypoint": None, "hostname": None, "user": None, "working_dir": None,
                          "stop_signal": None, "tty": False, "stdin_open": False, "healthcheck": None, "ports": None}
        assert all(value is None for value in host.values()), host


def test_every_field_is_converted():
    spec = to_dict(parse_service_spec({
        "name": "web", "image": "busybox", "entrypoint": ["sh", "-c"], "user": "1", "tty": True, "init": False,
        "hosts": ["10.0.0.2 db db.local"], "ulimits": [{"name": "nofile", "soft": 1, "hard": 2}],
        "healthcheck": {"test": ["CMD", "true"], "interval": 0.5, "retries": 2},
        "log_driver": {"name": "local", "options": {"max-size": "1m"}},
        "mounts": [{"target": "/d", "source": "data", "volume_labels": {"a": "b"}, "volume_driver": "local"},
                   {"target": "/t", "type": "tmpfs", "tmpfs_size_bytes": 1024, "tmpfs_mode": 0o700},
                   {"target": "/h", "type": "bind", "source": "/tmp", "bind_propagation": "rslave"}],
        "ports": [{"target": 80, "published": 8080, "mode": "host"}, {"target": 53, "protocol": "udp"},
                  {"target": 81, "published": 0, "mode": "host"}]}))
    config, host = dockerargs.container_config(spec), dockerargs.host_config(spec)
    assert config["entrypoint"] == ["sh", "-c"] and config["tty"] is True
    assert config["healthcheck"] == {"Test": ["CMD", "true"], "Interval": 500_000_000, "Timeout": 0,
                                     "StartPeriod": 0, "Retries": 2}
    assert config["ports"] == [(80, "tcp"), (53, "udp"), (81, "tcp")]
    # Ingress ports are the routing mesh's, not bound on the task's node.
    assert host["port_bindings"] == {"80/tcp": [8080], "81/tcp": [None]}
    assert host["init"] is False and host["extra_hosts"] == ["db:10.0.0.2", "db.local:10.0.0.2"]
    assert host["ulimits"] == [{"Name": "nofile", "Soft": 1, "Hard": 2}]
    assert host["log_config"] == {"Type": "local", "Config": {"max-size": "1m"}}
    volume, tmpfs, bind = host["mounts"]
    assert volume["VolumeOptions"] == {"Labels": {"a": "b"}, "DriverConfig": {"Name": "local"}}
    assert tmpfs["TmpfsOptions"] == {"SizeBytes": 1024, "Mode": 0o700}
    assert bind["BindOptions"] == {"Propagation": "rslave"}


def test_has_healthcheck_follows_swarmkit():
    assert dockerargs.has_healthcheck({"test": ["CMD", "true"]}, False)
    assert not dockerargs.has_healthcheck({"test": ["NONE"]}, True)
    assert dockerargs.has_healthcheck(None, True) and not dockerargs.has_healthcheck(None, False)
    assert dockerargs.has_healthcheck({"test": [], "interval": 1}, True)
