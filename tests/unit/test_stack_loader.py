"""The compose loader of `stack deploy` (stacks/loader.py): what a user sees
from docker/cli's loader for the same files -- values, errors, warnings."""
from __future__ import annotations

import functools
import importlib.util
import textwrap
from pathlib import Path

import pytest

from stacks.duration import parse_duration
from stacks.loader import LoadedStack, StackFileError, load, load_text
from swarmpy.units import parse_memory

WD = "/srv/stack"


def stack(text: str, env: dict | None = None, name: str = "docker-compose.yml") -> LoadedStack:
    return load_text([(name, textwrap.dedent(text))], env=env or {}, working_dir=WD)


def stacks(*texts: str, env: dict | None = None) -> LoadedStack:
    files = [(f"f{i}.yml", textwrap.dedent(t)) for i, t in enumerate(texts, 1)]
    return load_text(files, env=env or {}, working_dir=WD)


def service(text: str, env: dict | None = None, name: str = "web") -> dict:
    return stack(text, env).config["services"][name]


def error(text: str, env: dict | None = None) -> str:
    with pytest.raises(StackFileError) as info:
        stack(text, env)
    return str(info.value)


V3 = 'version: "3.8"\n'


# --- interpolation -------------------------------------------------------------------------------

ENV = {"FOO": "first", "BAR": ""}


@pytest.mark.parametrize("template, expected", [
    ("$FOO", "first"),
    ("${FOO}", "first"),
    ("x-${FOO}-y", "x-first-y"),
    ("${UNSET}", ""),
    ("${UNSET:-def}", "def"),
    ("${BAR:-def}", "def"),          # :- also replaces an empty value
    ("${UNSET-def}", "def"),
    ("${BAR-def}", ""),              # - only replaces an unset one
    ("${BAR:-/non:-alphanumeric}", "/non:-alphanumeric"),
    ("${UNSET:-$FOO}", "$FOO"),      # a default is never interpolated again
    ("${FOO:?err}", "first"),
    ("${BAR?err}", ""),
    ("$${FOO}", "${FOO}"),
    ("$$FOO", "$FOO"),
    ("$FOO-bar baz", "first"),       # docker's pattern: an unbraced name takes a -default too
])
def test_interpolation_forms(template: str, expected: str) -> None:
    text = f'{V3}services:\n  web:\n    image: busybox\n    labels:\n      a: "{template}"\n'
    assert service(text, ENV)["labels"]["a"] == expected


@pytest.mark.parametrize("template, shown", [
    ("${NEED:?set NEED first}", "required variable NEED is missing a value: set NEED first"),
    ("${BAR:?is empty}", "required variable BAR is missing a value: is empty"),
    ("${NEED?}", "required variable NEED is missing a value: "),
])
def test_required_variable_error_is_dockers_text_with_file_and_line(template: str, shown: str) -> None:
    text = f'{V3}services:\n  web:\n    image: "{template}"\n'
    assert error(text, ENV) == (
        f'docker-compose.yml:4: invalid interpolation format for services.web.image: "{shown}"; '
        "you may need to escape any $ with another $")


@pytest.mark.parametrize("template", ["${", "$}", "${}", "${ foo}", "${foo }", "${foo!}", "hello ${NAME"])
def test_invalid_interpolation_syntax(template: str) -> None:
    text = f"{V3}services:\n  web:\n    image: busybox\n    environment:\n      - 'GREETING={template}'\n"
    assert error(text) == (
        f'docker-compose.yml:6: invalid interpolation format for services.web.environment.[]: '
        f'"GREETING={template}"; you may need to escape any $ with another $')


def test_keys_are_not_interpolated_and_default_env_is_os_environ(monkeypatch) -> None:
    monkeypatch.setenv("SWARMPY_TEST_TAG", "1.2")
    result = load_text([("a.yml", f"{V3}services:\n  web:\n    image: app:$SWARMPY_TEST_TAG\n"
                                  "    labels:\n      $SWARMPY_TEST_TAG: x\n")], working_dir=WD)
    assert result.config["services"]["web"]["image"] == "app:1.2"
    assert result.config["services"]["web"]["labels"] == {"$SWARMPY_TEST_TAG": "x"}


def test_interpolated_values_are_cast_to_their_types() -> None:
    web = service("""\
        version: "3.8"
        services:
          web:
            image: busybox
            read_only: $YES
            deploy:
              replicas: ${N}
              update_config: {parallelism: $N, max_failure_ratio: "$RATIO"}
              restart_policy: {max_attempts: $N}
            ports:
              - target: $N
                published: "80$N"
            ulimits: {nproc: $N, nofile: {soft: $N, hard: $N}}
            secrets: [{source: s, mode: "$N"}]
        secrets:
          s: {external: $YES}
        """, {"N": "3", "YES": "on", "RATIO": "0.5"})
    assert web["read_only"] is True
    assert web["deploy"]["replicas"] == 3
    assert web["deploy"]["update_config"] == {"parallelism": 3, "max_failure_ratio": 0.5}
    assert web["deploy"]["restart_policy"]["max_attempts"] == 3
    assert web["ports"] == [{"target": 3, "published": 803}]
    assert web["ulimits"] == {"nproc": 3, "nofile": {"soft": 3, "hard": 3}}
    assert web["secrets"] == [{"source": "s", "mode": 3}]


def test_failed_cast_names_the_field_as_docker_does() -> None:
    text = f"{V3}services:\n  web:\n    image: busybox\n    deploy:\n      replicas: $N\n"
    assert error(text, {"N": "three"}) == (
        "docker-compose.yml:6: error while interpolating services.web.deploy.replicas: "
        'failed to cast to expected type: strconv.Atoi: parsing "three": invalid syntax')
    text = f"{V3}services:\n  web:\n    image: busybox\n    tty: $T\n"
    assert "failed to cast to expected type: invalid boolean: maybe" in error(text, {"T": "maybe"})


def test_a_literal_string_in_a_typed_field_is_refused_by_the_v3_schema() -> None:
    # docker casts only what interpolation changed
    text = f'{V3}services:\n  web:\n    image: busybox\n    deploy:\n      replicas: "3"\n'
    assert error(text) == 'docker-compose.yml:6: services.web.deploy.replicas: must be an integer (got "3")'


def test_compose_spec_files_cast_literal_strings_in_typed_fields() -> None:
    text = 'services:\n  web:\n    image: busybox\n    deploy:\n      replicas: "3"\n'
    assert service(text)["deploy"]["replicas"] == 3
    text = "services:\n  web:\n    image: busybox\n    deploy:\n      replicas: three\n"
    assert error(text) == 'docker-compose.yml:5: services.web.deploy.replicas: must be an integer (got "three")'


# --- YAML ----------------------------------------------------------------------------------------

def test_anchors_aliases_and_merge_keys() -> None:
    result = stack("""\
        version: "3.8"
        x-common: &common
          image: busybox
          labels: {tier: back}
          deploy: &deploy {replicas: 2}
        services:
          web:
            <<: *common
            image: nginx
          db:
            <<: *common
            deploy:
              <<: *deploy
              mode: replicated
        """)
    web, db = result.config["services"]["web"], result.config["services"]["db"]
    assert (web["image"], web["labels"], web["deploy"]) == ("nginx", {"tier": "back"}, {"replicas": 2})
    assert (db["image"], db["deploy"]) == ("busybox", {"replicas": 2, "mode": "replicated"})
    assert result.config["x-common"]["image"] == "busybox"


@pytest.mark.parametrize("text, message", [
    ("1", "docker-compose.yml:1: top-level object must be a mapping"),
    ("- a\n- b\n", "docker-compose.yml:1: top-level object must be a mapping"),
    ("", "docker-compose.yml: top-level object must be a mapping"),
    (f"{V3}services:\n  123:\n    image: busybox\n", "docker-compose.yml:3: non-string key in services: 123"),
    (f"{V3}1: x\n", "docker-compose.yml:2: non-string key at top level: 1"),
])
def test_yaml_shape_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_invalid_yaml_names_the_line() -> None:
    message = error(f"{V3}services:\n  web:\n    image: busybox\n   bad: [\n")
    assert message.startswith("docker-compose.yml:5: invalid YAML")


# --- schema --------------------------------------------------------------------------------------

def test_wrong_type_names_file_line_key_and_what_is_allowed() -> None:
    text = f"{V3}services:\n  web:\n    image: busybox\n    deploy:\n      replicas: three\n"
    assert error(text) == 'docker-compose.yml:6: services.web.deploy.replicas: must be an integer (got "three")'


def test_unknown_key_lists_the_allowed_ones_and_the_likely_one() -> None:
    message = error(f"{V3}services:\n  web:\n    imagee: busybox\n")
    assert message.startswith('docker-compose.yml:4: services.web: additional property "imagee" '
                              "is not allowed (allowed: build, cap_add, cap_drop, ")
    assert message.endswith(', working_dir, x-*); did you mean "image"?')
    message = error(f"{V3}services:\n  web:\n    image: busybox\n    deploy:\n      replica: 2\n")
    assert message.startswith('docker-compose.yml:6: services.web.deploy: additional property "replica"')
    assert 'did you mean "replicas"?' in message


@pytest.mark.parametrize("snippet, message", [
    ("environment:\n      A: [1]", "6: services.web.environment.A: must be a string, number or null (got a list)"),
    ("command: {a: 1}", "5: services.web.command: must be a string or list (got a mapping)"),
    ("stop_grace_period: 10x",
     '5: services.web.stop_grace_period: must be a Go duration such as 1h2m3.5s, 300ms or 10us (got "10x")'),
    ("ports:\n      - 80:abc", '6: services.web.ports[0]: invalid port "80:abc": invalid containerPort: abc '
                               "(expected [host_ip:][published:]target[/protocol])"),
    ("volumes:\n      - {type: volume, target: /a, bogus: 1}",
     '6: services.web.volumes[0]: additional property "bogus" is not allowed (allowed: bind, consistency, '
     "read_only, source, target, tmpfs, type, volume)"),
    ("deploy:\n      mode: replicated\n      resources: {limits: {memory: lots}}",
     "7: services.web.deploy.resources.limits.memory: invalid size: 'lots'"),
])
def test_schema_errors_pick_the_most_specific_branch(snippet: str, message: str) -> None:
    assert error(f"{V3}services:\n  web:\n    image: busybox\n    {snippet}\n") == f"docker-compose.yml:{message}"


def test_version_rules() -> None:
    assert error('version: "2"\nservices: {}\n') == "docker-compose.yml:1: unsupported Compose file version: 2"
    assert error("version: 3\nservices: {}\n") == "docker-compose.yml:1: version: must be a string (got 3)"
    with pytest.raises(StackFileError) as info:
        stacks('version: "3.3"\nservices: {}\n', 'version: "3.8"\nservices: {}\n')
    assert str(info.value) == "f2.yml:1: version mismatched between two composefiles : 3.3 and 3.8"
    assert stack('version: "3"\nservices: {}\n').config["version"] == "3.13"


def test_files_without_version_follow_the_compose_spec() -> None:
    text = "name: demo\nservices:\n  web:\n    image: busybox\n    profiles: [debug]\n"
    assert service(text)["profiles"] == ["debug"]
    assert 'additional property "profiles"' in error(V3 + text.split("\n", 1)[1])


def test_compose_spec_long_forms() -> None:
    result = stack("""\
        services:
          web:
            image: busybox
            env_file: [{path: missing.env, required: false}]
            ports:
              - {target: "80", published: "8000-8001", host_ip: 127.0.0.1}
        include: [other.yml]
        """.replace("include: [other.yml]\n", ""))
    web = result.config["services"]["web"]
    assert web["environment"] == {}
    assert web["ports"] == [{"target": 80, "published": 8000, "host_ip": "127.0.0.1"},
                            {"target": 80, "published": 8001, "host_ip": "127.0.0.1"}]
    assert result.warnings == ["ignoring IP-address (127.0.0.1:8000:80/tcp) service will listen on '0.0.0.0'",
                               "ignoring IP-address (127.0.0.1:8001:80/tcp) service will listen on '0.0.0.0'"]
    assert error("services: {}\ninclude: [other.yml]\n") == (
        "docker-compose.yml:2: include: not supported by stack deploy (pass each file with its own -c)")


def test_extension_fields_are_allowed() -> None:
    result = stack(f"{V3}x-meta: {{owner: me}}\nservices:\n  web:\n    image: busybox\n    x-note: hi\n")
    assert result.config["x-meta"] == {"owner": "me"}
    assert result.config["services"]["web"]["x-note"] == "hi"


# --- warnings and forbidden keys -----------------------------------------------------------------

def test_unsupported_and_deprecated_options_warn_as_docker() -> None:
    result = stacks("""\
        version: "3.8"
        services:
          web: {image: web, build: ., privileged: true, container_name: web}
          db: {image: db, restart: always, links: [web]}
        """, f"{V3}services:\n  db:\n    expose: ['5432']\n")
    assert result.warnings == [
        "Ignoring unsupported options: build, links, privileged, restart",
        "Ignoring deprecated options:\n\n"
        "container_name: Setting the container name is not supported.\n\n"
        "expose: Exposing ports is unnecessary - services on the same network can access "
        "each other's containers on any port.",
    ]


def test_forbidden_options_are_an_error_naming_each() -> None:
    message = error("""\
        version: "3.8"
        services:
          web:
            image: busybox
            volume_driver: x
          db:
            extends: {service: web}
        """)
    assert message == (
        "docker-compose.yml:5: Compose file contains unsupported options:\n\n"
        "extends: Support for `extends` is not implemented yet.\n\n"
        "volume_driver: Instead of setting the volume driver on the service, define a volume using "
        "the top-level `volumes` option and specify the driver there.")


# --- short and long forms ------------------------------------------------------------------------

def test_ports_short_syntax_becomes_long_form_with_ranges_expanded() -> None:
    result = stack("""\
        version: "3.8"
        services:
          web:
            image: busybox
            ports:
              - "80-82:8080-8082"
              - "90:8090/udp"
              - 8600
              - "127.0.0.1:5000-5001:53"
              - {protocol: udp, target: 53, published: 10053}
        """)
    ingress = lambda t, p=None, proto="tcp": {"mode": "ingress", "target": t, "protocol": proto,
                                               **({"published": p} if p else {})}
    assert result.config["services"]["web"]["ports"] == [
        ingress(8080, 80), ingress(8081, 81), ingress(8082, 82), ingress(8090, 90, "udp"),
        ingress(8600), ingress(53, 5000), ingress(53, 5001),
        {"protocol": "udp", "target": 53, "published": 10053}]
    assert result.warnings == [
        "ignoring IP-address (127.0.0.1:5000-5001:53/tcp) service will listen on '0.0.0.0'"]


def test_volumes_short_syntax_and_bind_paths() -> None:
    web = service("""\
        version: "3.8"
        services:
          web:
            image: busybox
            volumes:
              - /anonymous
              - data:/data:nocopy
              - ./src:/app:ro
              - ~/cache:/cache:rshared
              - ../up:/up
              - type: bind
                source: conf
                target: /etc/conf
        volumes:
          data: {}
        """, {"HOME": "/home/me"})
    assert web["volumes"] == [
        {"type": "volume", "target": "/anonymous"},
        {"type": "volume", "source": "data", "target": "/data", "volume": {"nocopy": True}},
        {"type": "bind", "source": "/srv/stack/src", "target": "/app", "read_only": True},
        {"type": "bind", "source": "/home/me/cache", "target": "/cache", "bind": {"propagation": "rshared"}},
        {"type": "bind", "source": "/srv/up", "target": "/up"},
        {"type": "bind", "source": "/srv/stack/conf", "target": "/etc/conf"},
    ]


def test_bind_without_source_and_tilde_without_home() -> None:
    text = f"{V3}services:\n  web:\n    image: busybox\n    volumes:\n      - type: bind\n        target: /a\n"
    assert error(text) == ('docker-compose.yml:6: services.web.volumes[0]: invalid mount config for type '
                           '"bind": field Source must not be empty')
    result = stack(f"{V3}services:\n  web:\n    image: busybox\n    volumes: ['~/x:/x']\n")
    assert result.config["services"]["web"]["volumes"][0]["source"] == "/srv/stack/~/x"
    assert result.warnings == ["cannot expand '~', because the environment lacks HOME"]


def test_environment_forms_and_lookup() -> None:
    env = {"QUX": "qux", "EMPTY": "from-env"}
    as_map = service(f"{V3}services:\n  web:\n    image: b\n    environment:\n"
                     "      FOO: '1'\n      BAR: 2\n      BAZ: 2.5\n      QUX:\n      QUUX:\n", env)
    as_list = service(f"{V3}services:\n  web:\n    image: b\n    environment:\n"
                      "      [FOO=1, BAR=2, BAZ=2.5, ENABLED=true, QUX=, QUUX, EMPTY=]\n", env)
    assert as_map["environment"] == {"FOO": "1", "BAR": "2", "BAZ": "2.5",
                                     "QUX": "qux", "QUUX": None}
    assert as_list["environment"] == {**as_map["environment"], "ENABLED": "true", "EMPTY": "from-env"}


def test_env_file_is_read_relative_to_the_stack_and_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("\ufeff# comment\nFOO=from_a\nBAR=from_a\n  SPACED=x y \nPASS\nGONE\n")
    (tmp_path / "b.env").write_text("BAR=from_b\nQUOTED=\"kept\"\n")
    (tmp_path / "stack.yml").write_text(
        f"{V3}services:\n  web:\n    image: b\n    env_file: [a.env, b.env]\n    environment: [FOO=own]\n")
    web = load([str(tmp_path / "stack.yml")], env={"PASS": "through"}).config["services"]["web"]
    assert web["environment"] == {"FOO": "own", "BAR": "from_b", "SPACED": "x y ", "PASS": "through",
                                  "QUOTED": '"kept"'}
    assert web["env_file"] == ["a.env", "b.env"]


def test_missing_env_file_is_an_error_with_its_path() -> None:
    text = f"{V3}services:\n  web:\n    image: b\n    env_file: nope.env\n"
    assert error(text) == ("docker-compose.yml:5: services.web.env_file[0]: "
                           "open /srv/stack/nope.env: no such file or directory")


def test_other_short_forms() -> None:
    web = service("""\
        version: "3.8"
        services:
          web:
            image: busybox
            command: 'sh -c "echo $$HOME # not a comment" x#y # comment'
            entrypoint: [/bin/sh]
            labels: [a=1, b]
            extra_hosts: ["db:10.0.0.2", "v6=[::1]"]
            dns: 8.8.8.8
            healthcheck: {test: curl -f localhost}
            secrets: [s, {source: t, target: /run/t}]
            networks: [front, back]
        secrets: {s: {external: true}, t: {external: true}}
        networks: {front: {}, back: {}}
        """)
    assert web["command"] == ["sh", "-c", "echo $HOME # not a comment", "x#y"]
    assert web["entrypoint"] == ["/bin/sh"]
    assert web["labels"] == {"a": "1", "b": ""}
    assert web["extra_hosts"] == ["db:10.0.0.2", "v6:::1"]
    assert web["dns"] == ["8.8.8.8"]
    assert web["healthcheck"]["test"] == ["CMD-SHELL", "curl -f localhost"]
    assert web["secrets"] == [{"source": "s"}, {"source": "t", "target": "/run/t"}]
    assert web["networks"] == {"front": None, "back": None}
    mapped = service(f"{V3}services:\n  web:\n    image: b\n    extra_hosts: {{zulu: 1.2.3.4, alpha: 5.6.7.8}}\n")
    assert mapped["extra_hosts"] == ["alpha:5.6.7.8", "zulu:1.2.3.4"]


def test_top_level_objects_external_names_and_files() -> None:
    result = stack("""\
        version: "3.8"
        services: {}
        networks:
          plain:
          ext: {external: true}
          old: {external: {name: real-net}}
        volumes:
          data: {external: true, name: shared}
        secrets:
          pw: {file: ./pw.txt}
          given: {external: true}
        configs:
          conf: {file: /etc/app.conf}
        """)
    config = result.config
    assert config["networks"] == {"plain": {}, "ext": {"external": True, "name": "ext"},
                                  "old": {"external": True, "name": "real-net"}}
    assert config["volumes"] == {"data": {"external": True, "name": "shared"}}
    assert config["secrets"] == {"pw": {"file": "/srv/stack/pw.txt"},
                                 "given": {"external": True, "name": "given"}}
    assert config["configs"] == {"conf": {"file": "/etc/app.conf"}}
    assert result.warnings == ["network old: network.external.name is deprecated in favor of network.name"]


@pytest.mark.parametrize("snippet, message", [
    ("volumes:\n  v: {external: true, driver: foobar}",
     'conflicting parameters "external" and "driver" specified for volume "v"'),
    ("volumes:\n  v: {name: a, external: {name: b}}",
     "volume v: volume.external.name and volume.name conflict; only use volume.name"),
    ("secrets:\n  s: {driver: d, file: ./f}", "secret s: secret.driver and secret.file conflict; only use secret.driver"),
])
def test_top_level_object_conflicts(snippet: str, message: str) -> None:
    assert error(f"{V3}services: {{}}\n{snippet}\n") == f"docker-compose.yml:4: {message}"


# --- several files (docker/cli merge_test.go) ----------------------------------------------------

def merged(base: str, override: str, env: dict | None = None) -> dict:
    service_text = lambda body: 'version: "3.4"\nservices:\n  foo:\n' + textwrap.indent(
        textwrap.dedent(body), "    ")
    return stacks(service_text(base), service_text(override), env=env).config["services"]["foo"]


def test_merge_ports_by_published_port() -> None:
    p = lambda pub, tgt: {"mode": "ingress", "target": tgt, "protocol": "tcp", "published": pub}
    assert merged("ports: ['8080:80']", "image: x")["ports"] == [p(8080, 80)]
    assert merged("ports: ['8080:80']", "ports: ['8081:80']")["ports"] == [p(8080, 80), p(8081, 80)]
    assert merged("ports: ['8080:80']", "ports: ['8080:81']")["ports"] == [p(8080, 81)]
    assert merged("ports: ['9090:90', '8080:80']", "ports: [{target: 81, published: 8080}]")["ports"] == [
        {"target": 81, "published": 8080}, p(9090, 90)]


def test_merge_secrets_and_configs_by_source() -> None:
    for key in ("secrets", "configs"):
        foo = merged(f"{key}: [foo, {{source: bar, target: waw}}]",
                     f"{key}: [{{source: bar, target: bof}}, {{source: baz, target: waw}}]")
        assert foo[key] == [{"source": "bar", "target": "bof"}, {"source": "baz", "target": "waw"},
                            {"source": "foo"}]


def test_merge_volumes_by_target() -> None:
    foo = merged("volumes: ['data:/var/app', '/logs']", "volumes: [{type: bind, source: /local, target: /var/app}]")
    assert foo["volumes"] == [{"type": "volume", "target": "/logs"},
                              {"type": "bind", "source": "/local", "target": "/var/app"}]


def test_merge_ulimits_and_networks() -> None:
    foo = merged("ulimits: {nofile: {soft: 11111, hard: 99999}, noproc: 44444}",
                 "ulimits: {nofile: 55555, noproc: {soft: 22222, hard: 33333}}")
    assert foo["ulimits"] == {"nofile": 55555, "noproc": {"soft": 22222, "hard": 33333}}
    assert merged("networks: [net1, net2]", "networks: [net1, net3]")["networks"] == {
        "net1": None, "net2": None, "net3": None}
    foo = merged("networks: {net1: {aliases: [alias1]}, net2: }",
                 "networks: {net1: {aliases: [alias2, alias3]}, net3: {}}")
    assert foo["networks"] == {"net1": {"aliases": ["alias2", "alias3"]}, "net2": None, "net3": {}}


@pytest.mark.parametrize("base, override, expected", [
    ("{driver: json-file, options: {frequency: '2000', timeout: '23'}}",
     "{options: {timeout: '360', pretty-print: 'on'}}",
     {"driver": "json-file", "options": {"frequency": "2000", "timeout": "360", "pretty-print": "on"}}),
    ("{driver: json-file, options: {frequency: '2000', timeout: '23'}}",
     "{driver: syslog, options: {timeout: '360', pretty-print: 'on'}}",
     {"driver": "syslog", "options": {"timeout": "360", "pretty-print": "on"}}),
    ("{options: {frequency: '2000', timeout: '23'}}",
     "{driver: json-file, options: {timeout: '360', pretty-print: 'on'}}",
     {"driver": "json-file", "options": {"frequency": "2000", "timeout": "360", "pretty-print": "on"}}),
    ("{driver: json-file, options: {frequency: '2000', timeout: '23'}}", "{driver: syslog}",
     {"driver": "syslog"}),
])
def test_merge_logging(base: str, override: str, expected: dict) -> None:
    assert merged(f"logging: {base}", f"logging: {override}")["logging"] == expected


def test_merge_scalars_lists_maps_and_commands() -> None:
    foo = merged("""\
        image: foo
        command: foo bar
        cap_add: [NET_ADMIN]
        labels: [foo=bar, keep=1]
        environment: {A: '1', B: '2', C: ''}
        read_only: true
        deploy: {replicas: 3, placement: {constraints: [node.role==worker]}}
        """, """\
        image: baz
        command: foo baz
        cap_add: [SYS_ADMIN]
        labels: {foo: baz}
        environment: [A=9, B=, C=3, D]
        read_only: false
        deploy: {replicas: 0, placement: {constraints: [node.labels.x==y]}}
        """)
    assert foo["image"] == "baz"
    assert foo["command"] == ["foo", "baz"]                     # replaced, not appended
    assert foo["cap_add"] == ["NET_ADMIN", "SYS_ADMIN"]         # other lists append
    assert foo["labels"] == {"foo": "baz", "keep": "1"}
    assert foo["environment"] == {"A": "9", "B": "2", "C": "3", "D": None}  # empty does not replace
    assert foo["read_only"] is True                             # false is "empty" for docker
    assert foo["deploy"] == {"replicas": 0, "placement": {"constraints": ["node.role==worker", "node.labels.x==y"]}}


def test_merge_adds_services_replaces_top_level_objects_and_resolves_against_the_first_dir() -> None:
    result = stacks(
        'version: "3.4"\nservices:\n  foo: {image: baz}\nnetworks:\n'
        '  hostnet: {driver: overlay, ipam: {driver: default, config: [{subnet: 10.0.0.0/20}]}}\n',
        'version: "3.4"\nservices:\n  bar: {image: bar, volumes: ["./x:/x"]}\n'
        "networks:\n  hostnet: {external: {name: host}}\n")
    assert list(result.config["services"]) == ["foo", "bar"]
    assert result.config["services"]["bar"]["volumes"][0]["source"] == "/srv/stack/x"
    assert result.config["networks"] == {"hostnet": {"external": True, "name": "host"}}


# --- files on disk and docker's own outputs ------------------------------------------------------

def test_load_from_disk_sets_working_dir_and_files(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(f"{V3}services:\n  web: {{image: busybox, volumes: ['.:/src']}}\n")
    result = load([str(tmp_path / "a.yml")], env={})
    assert (result.working_dir, result.files) == (str(tmp_path), [str(tmp_path / "a.yml")])
    assert result.config["services"]["web"]["volumes"][0]["source"] == str(tmp_path)
    with pytest.raises(StackFileError, match=r"open .*missing.yml: No such file or directory"):
        load([str(tmp_path / "missing.yml")], env={})


STACKS = Path(__file__).resolve().parents[1] / "stacks"
CORPUS = sorted((STACKS / "corpus").glob("*.yml"))


@functools.lru_cache(maxsize=1)
def _golden():
    """tests/stacks/golden.py, imported by path as it asks (tests/stacks is no package)."""
    spec = importlib.util.spec_from_file_location("stack_corpus_golden", STACKS / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _comparable(value: object, key: str = "") -> object:
    """docker stack config's view: empty fields omitted, durations and sizes as numbers."""
    if isinstance(value, dict):
        items = ((k, _comparable(v, k)) for k, v in value.items())
        keep_empty = key in ("networks", "volumes", "secrets", "configs")
        return {k: v for k, v in items if v not in ("", [], {}, False, 0) or (keep_empty and v == {})}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, str):
        if key in ("stop_grace_period", "interval", "timeout", "start_period", "delay", "window", "monitor"):
            return round(parse_duration(value), 9)
        if key == "memory":
            return parse_memory(value)
    return value


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_loads_as_docker_stack_config_shows_it(path: Path) -> None:
    golden = _golden()
    expected = golden.docker_config(path.stem)
    if expected is None:
        pytest.skip("no golden output recorded")
    env = golden.docker_golden(path.stem, raw=True)["env"]  # the only variables docker saw
    mine = load([str(path)], env=env).config
    assert _comparable(mine) == _comparable(expected)


@pytest.mark.parametrize("case, files", [
    ("bad-interpolation", ["bad-interpolation.yml"]),
    ("required-variable", ["required-variable.yml"]),
    ("version-mismatch", ["version-mismatch.yml", "version-mismatch.override.yml"]),
    ("volumes-from", ["volumes-from.yml"]),
])
def test_negative_cases_say_exactly_what_docker_says(case: str, files: list[str]) -> None:
    docker_says = _golden().docker_error(case)["deploy"]["message"]
    with pytest.raises(StackFileError) as info:
        load([str(STACKS / "negative" / f) for f in files], env={})
    assert info.value.detail == docker_says


@pytest.mark.parametrize("case, docker_words, ours", [
    # docker: "services.web.deploy Additional property replica is not allowed"
    ("typo-key", "Additional property replica", 'services.web.deploy: additional property "replica" is not allowed'),
    # docker: "services.web.deploy.replicas must be a integer"
    ("wrong-type", "replicas must be a integer", "services.web.deploy.replicas: must be an integer"),
])
def test_negative_schema_cases_keep_dockers_meaning(case: str, docker_words: str, ours: str) -> None:
    assert docker_words in _golden().docker_error(case)["deploy"]["message"]
    with pytest.raises(StackFileError) as info:
        load([str(STACKS / "negative" / f"{case}.yml")], env={})
    assert ours in str(info.value) and info.value.line is not None
