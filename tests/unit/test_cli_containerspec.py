"""swarmpy/cli/containerspec.py: docker's flag syntax and texts, flags -> spec JSON, and
`service update`'s -add/-rm rules.  No daemon: the parser and the pure functions only."""
from __future__ import annotations

import pytest

from swarmpy.cli import service
from swarmpy.cli.containerspec import apply_update
from swarmpy.cli.dockeropts import parse_file_ref, parse_mount, parse_publish, parse_ulimit
from swarmpy.cli.main import build_parser
from swarmpy.cli.parser import UsageError
from swarmpy.spec import parse_service_spec


def create_spec(*flags: str) -> dict:
    args = build_parser().parse_args(["service", "create", "--name", "web", *flags, "busybox"])
    return service.spec_from_args(args)


def updated(spec: dict, *flags: str) -> dict:
    args = build_parser().parse_args(["service", "update", *flags, "web"])
    spec = dict(spec)
    apply_update(args, spec)
    return spec


def usage_error(*flags: str) -> str:
    with pytest.raises(UsageError) as info:
        create_spec(*flags)
    return str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("type=volume,source=data,target=/data,volume-label=a=b,volume-label=c=d,readonly",
     {"type": "volume", "source": "data", "target": "/data", "volume_labels": {"a": "b", "c": "d"},
      "read_only": True}),
    ("type=bind,src=/tmp,dst=/host,bind-propagation=rslave,ro=false",
     {"type": "bind", "source": "/tmp", "target": "/host", "bind_propagation": "rslave", "read_only": False}),
    ("type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1770",
     {"type": "tmpfs", "target": "/t", "tmpfs_size_bytes": 64 << 20, "tmpfs_mode": 0o1770}),
    ("target=/anon,volume-nocopy,volume-driver=local,volume-opt=o=x",
     {"type": "volume", "target": "/anon", "volume_nocopy": True, "volume_driver": "local",
      "volume_driver_options": {"o": "x"}}),
])
def test_mount_syntax(text, expected):
    assert parse_mount(text) == expected


@pytest.mark.parametrize("text, message", [
    ("type=volume", "target is required"),
    ("target=/x,bogus", "invalid field 'bogus' must be a key=value pair"),
    ("target=/x,size=1", "unexpected key 'size' in 'size=1'"),
    ("target=/x,readonly=maybe", "invalid value for readonly: maybe"),
    ("type=tmpfs,target=/x,tmpfs-mode=999", "invalid value for tmpfs-mode: 999"),
    ("type=tmpfs,target=/x,volume-label=a=b", "cannot mix 'volume-*' options with mount type 'tmpfs'"),
    ("type=volume,target=/x,tmpfs-size=1m", "cannot mix 'tmpfs-*' options with mount type 'volume'"),
])
def test_mount_errors_are_docker_s(text, message):
    with pytest.raises(ValueError) as info:
        parse_mount(text)
    assert str(info.value) == message


@pytest.mark.parametrize("text, expected", [
    ("80", [(80, 0, "tcp", "ingress")]),
    ("8080:80", [(80, 8080, "tcp", "ingress")]),
    ("53:53/udp", [(53, 53, "udp", "ingress")]),
    ("8080-8081:80-81", [(80, 8080, "tcp", "ingress"), (81, 8081, "tcp", "ingress")]),
    ("published=9090,target=90,protocol=sctp,mode=host", [(90, 9090, "sctp", "host")]),
    ("target=90", [(90, 0, "tcp", "ingress")]),
])
def test_publish_syntax(text, expected):
    ports = parse_publish(text)
    assert [(p["target"], p["published"], p["protocol"], p["mode"]) for p in ports] == expected


@pytest.mark.parametrize("text, message", [
    ("1.2.3.4:80:80", "hostip is not supported"),
    ("80/icmp", "invalid proto: icmp"),
    ("x:80", "invalid hostPort: x"),
    ("8080-8082:80-81", "invalid ranges specified for container and host Ports: 80-81 and 8080-8082"),
    ("published=80,mode=vip,target=80", "invalid publish mode value (vip): must be either 'ingress' or 'host'"),
    ("published=80,protocol=icmp,target=80", "invalid protocol value 'icmp'"),
    ("published=80", "missing mandatory field 'target'"),
    ("published=80,target=80,port=1", "invalid field key: port"),
])
def test_publish_errors_are_docker_s(text, message):
    with pytest.raises(ValueError) as info:
        parse_publish(text)
    assert str(info.value) == message


def test_ulimit_syntax():
    assert parse_ulimit("nofile=1024:2048") == {"name": "nofile", "soft": 1024, "hard": 2048}
    assert parse_ulimit("nproc=64") == {"name": "nproc", "soft": 64, "hard": 64}
    for text, message in (("nofile", "invalid ulimit argument: nofile"),
                          ("nofile=2:1", "ulimit soft limit must be less than or equal to hard limit: 2 > 1"),
                          ("nofile=1:2:3", "too many limit value arguments")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            parse_ulimit(text)


def test_create_flags_make_a_valid_spec():
    spec = create_spec("--entrypoint", "sh -c", "--hostname", "h", "-u", "1:1", "-w", "/srv", "-t", "--init",
                       "--host", "db:10.0.0.2", "--dns", "10.0.0.53", "--sysctl", "a.b=1", "--ulimit", "nofile=8",
                       "--health-cmd", "true", "--health-interval", "500ms", "--health-retries", "2",
                       "--log-driver", "json-file", "--log-opt", "max-size=1m", "-p", "8080:80",
                       "--update-delay", "1m30s", "--update-parallelism", "2", "--rollback-parallelism", "0",
                       "--rollback-failure-action", "continue")
    parsed = parse_service_spec(spec)
    assert parsed.entrypoint == ["sh", "-c"] and parsed.hosts == ["10.0.0.2 db"] and parsed.tty is True
    assert parsed.healthcheck.test == ["CMD-SHELL", "true"] and parsed.healthcheck.interval == 0.5
    assert parsed.update_config.parallelism == 2 and parsed.update_config.delay == 90.0
    assert parsed.rollback_config.parallelism == 0 and parsed.rollback_config.failure_action == "continue"
    assert parsed.ulimits[0].soft == parsed.ulimits[0].hard == 8
    # no flag: docker's defaults, not False/empty overrides
    plain = parse_service_spec(create_spec())
    assert plain.init is None and plain.healthcheck is None and plain.tty is False


def test_health_flags_as_docker_combines_them():
    assert create_spec("--no-healthcheck")["healthcheck"] == {"test": ["NONE"]}
    assert create_spec("--health-interval", "2s")["healthcheck"] == {"test": [], "interval": 2.0}
    assert "--no-healthcheck conflicts with --health-* options" in usage_error("--no-healthcheck",
                                                                             "--health-retries", "1")


@pytest.mark.parametrize("flags, text", [
    (["--health-interval", "x"], 'invalid argument "x" for "--health-interval" flag: time: invalid duration "x"'),
    (["--health-retries", "x"], 'invalid argument "x" for "--health-retries" flag: '
                                'strconv.ParseInt: parsing "x": invalid syntax'),
    (["--update-max-failure-ratio", "x"], 'invalid argument "x" for "--update-max-failure-ratio" flag: '
                                          'strconv.ParseFloat: parsing "x": invalid syntax'),
    (["--host", "db:nowhere"], 'invalid argument "db:nowhere" for "--host" flag: '
                               'invalid IP address in add-host: "nowhere"'),
    (["--dns", "dns.example"], "IP address is not correctly formatted: dns.example"),
    (["--sysctl", "a.b"], 'invalid argument "a.b" for "--sysctl" flag'),
    (["--log-opt", "max-size=1m"], "--log-opt needs --log-driver"),
])
def test_bad_values_fail_with_docker_s_texts(flags, text):
    assert text in usage_error(*flags)


def test_update_add_and_rm_rules():
    spec = create_spec("--host", "db:10.0.0.2", "--dns", "10.0.0.53", "--sysctl", "a.b=1", "--ulimit", "nofile=8",
                       "--cap-add", "NET_ADMIN", "--mount", "target=/a", "--mount", "type=tmpfs,target=/t",
                       "-p", "8080:80", "-p", "53:53/udp", "--health-cmd", "true")
    new = updated(spec, "--host-rm", "db", "--host-add", "cache:10.0.0.3", "--dns-add", "10.0.0.54",
                  "--sysctl-rm", "a.b", "--sysctl-add", "c.d=2", "--ulimit-add", "nofile=16", "--cap-drop",
                  "net_admin", "--mount-rm", "/a", "--publish-rm", "80", "--publish-add", "9090:90",
                  "--health-interval", "1s", "--hostname", "h2", "--update-order", "start-first")
    assert new["hosts"] == ["10.0.0.3 cache"] and new["dns_nameservers"] == ["10.0.0.53", "10.0.0.54"]
    assert new["sysctls"] == {"c.d": "2"} and new["ulimits"] == [{"name": "nofile", "soft": 16, "hard": 16}]
    assert new["cap_add"] == [] and new["cap_drop"] == ["net_admin"]
    assert [m["target"] for m in new["mounts"]] == ["/t"]
    assert [(p["target"], p["published"]) for p in new["ports"]] == [(53, 53), (90, 9090)]
    assert new["healthcheck"] == {"test": ["CMD-SHELL", "true"], "interval": 1.0}
    assert new["hostname"] == "h2" and new["update_config"]["order"] == "start-first"
    assert updated(new, "--no-healthcheck")["healthcheck"] == {"test": ["NONE"]}
    assert updated({"healthcheck": {"test": ["NONE"]}}, "--health-retries", "3")["healthcheck"] == \
        {"test": [], "retries": 3}
    parse_service_spec(new)


def test_update_of_a_spec_stored_before_update_config(monkeypatch):
    old = {"name": "web", "image": "busybox", "update_parallelism": 3}
    args = build_parser().parse_args(["service", "update", "--update-delay", "2s", "web"])
    captured = {}

    class FakeClient:
        def __init__(self, host):
            pass

        def get(self, path):
            return {"id": "x", "version": 1, "spec": dict(old)}

        def call(self, method, path, body=None, query=None):
            captured.update(body)

    monkeypatch.setattr(service, "Client", FakeClient)
    service.update(args)
    assert "update_parallelism" not in captured
    assert captured["update_config"] == {"parallelism": 3, "delay": 2.0}


@pytest.mark.parametrize("text, ref", [
    ("db_pw", {"source": "db_pw"}),
    ("source=db_pw,target=pw,uid=1000,gid=1000,mode=0400",
     {"source": "db_pw", "target": "pw", "uid": "1000", "gid": "1000", "mode": 0o400}),
    ("src=app,mode=292", {"source": "app", "mode": 292}),
])
def test_secret_and_config_flags_take_dockers_forms(text, ref):
    assert parse_file_ref(text) == ref


@pytest.mark.parametrize("text, message", [
    ("target=x", "source is required"),
    ("source=a,bogus=1", "invalid field key 'bogus'"),
    ("source=a,mode=rw", 'strconv.ParseUint: parsing "rw": invalid syntax'),
])
def test_bad_secret_flags_get_dockers_texts(text, message):
    with pytest.raises(ValueError, match=message):
        parse_file_ref(text)
