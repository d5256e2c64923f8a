"""swarmpy/cli/network.py and the network flags of `service create/update`: docker's flag
syntax and texts, flags -> request bodies, and what the commands print.  No daemon: the
parser, the pure functions, and the commands against a fake API client."""
from __future__ import annotations

import json

import pytest

from swarmpy.cli import containerspec, network, service
from swarmpy.cli.client import DaemonError
from swarmpy.cli.main import build_parser, main
from swarmpy.cli.parser import USAGE_EXIT, UsageError
from swarmpy.spec import parse_service_spec

NET_ID = "a1b2c3d4e5f60718293a4b5c6d"


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def stored(name: str, net_id: str = NET_ID, **spec) -> dict:
    """A network as GET /v1/networks returns it."""
    return {"id": net_id, "spec": {"name": name, "driver": "overlay", "subnet": "", "labels": {}, "options": {},
                                   "attachable": False, "internal": False, "ingress": False, **spec},
            "subnet": "10.0.1.0/24", "vni": 4097, "node_addrs": {}, "vips": {}, "created_at": 1700000000.5,
            "updated_at": 1700000000.5, "version": 3, "scope": "swarm",
            "ipam": {"driver": "default", "config": [{"subnet": "10.0.1.0/24", "gateway": ""}]}}


class FakeClient:
    """Answers like the daemon's API for a fixed set of networks; records what was asked."""

    def __init__(self, networks: list[dict], refuse: dict[str, str] | None = None) -> None:
        self.networks, self.refuse, self.calls = networks, refuse or {}, []

    def _find(self, ref: str) -> dict:
        for n in self.networks:
            if ref in (n["id"], n["spec"]["name"]) or n["id"].startswith(ref):
                return n
        raise DaemonError(404, f"network {ref} not found")

    def get(self, url: str, **query):
        if url == "/networks":
            return self.networks
        return self._find(url.split("/", 2)[2])

    def call(self, method: str, url: str, body=None, query=None):
        self.calls.append((method, url, body))
        if method == "POST":
            return stored(body["name"])
        ref = url.split("/", 2)[2]
        if ref in self.refuse:
            raise DaemonError(409, self.refuse[ref])
        return {"id": self._find(ref)["id"]}


@pytest.fixture
def fake(monkeypatch):
    def install(networks: list[dict], refuse: dict[str, str] | None = None) -> FakeClient:
        client = FakeClient(networks, refuse)
        monkeypatch.setattr(network, "Client", lambda host=None: client)
        monkeypatch.setattr(service, "Client", lambda host=None: client)
        return client
    return install


# -- network create ------------------------------------------------------------------------------------
def test_create_flags_make_the_body():
    args = parse("network", "create", "-d", "overlay", "--subnet", "10.9.0.0/24", "--attachable", "--internal",
                 "-o", "multicast=false", "--opt", "x=1", "--label", "team=web", "--label", "bare", "web_net")
    assert network.create_body(args) == {
        "name": "web_net", "driver": "overlay", "attachable": True, "internal": True,
        "labels": {"team": "web", "bare": ""}, "options": {"multicast": "false", "x": "1"},
        "subnet": "10.9.0.0/24"}


def test_create_defaults_to_overlay_and_the_pool():
    body = network.create_body(parse("network", "create", "plain"))
    assert body == {"name": "plain", "driver": "overlay", "attachable": False, "internal": False,
                    "labels": {}, "options": {}}
    assert network.create_body(parse("network", "create", "--ingress", "ingress"))["ingress"] is True


@pytest.mark.parametrize("driver", ["bridge", "macvlan", "host"])
def test_a_local_driver_is_refused_as_docker_refuses_it_in_a_swarm(driver, capsys):
    assert main(["network", "create", "-d", driver, "n"]) == 1
    err = capsys.readouterr().err
    assert err == (f'Error: network driver "{driver}" is not supported in a swarm: swarmpy creates swarm-scoped '
                   "overlay networks only; use --driver overlay (the default)\n")


@pytest.mark.parametrize("argv, message", [
    (["--subnet", "10.1.0.0/24", "--subnet", "10.2.0.0/24"], "swarmpy's networks take one subnet"),
    (["-o", "multicast"], 'invalid argument "multicast" for "--opt" flag: use KEY=VALUE'),
    (["--scope", "local"], "swarmpy's networks are swarm-scoped; use swarm"),
])
def test_create_flag_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        network.create_body(parse("network", "create", *argv, "n"))


def test_create_prints_the_id(fake, capsys):
    client = fake([])
    assert main(["network", "create", "-o", "multicast=true", "web_net"]) == 0
    assert capsys.readouterr().out == f"{NET_ID}\n"
    assert client.calls == [("POST", "/networks", {"name": "web_net", "driver": "overlay", "attachable": False,
                                                    "internal": False, "labels": {},
                                                    "options": {"multicast": "true"}})]


# -- network ls ----------------------------------------------------------------------------------------
NETWORKS = [stored("web_net", "bbbb" + "0" * 21, labels={"com.docker.stack.namespace": "st", "team": "a"}),
            stored("ingress", "aaaa" + "0" * 21, ingress=True),
            stored("db", "cccc" + "0" * 21, labels={"team": "b"})]


def test_ls_is_dockers_table_sorted_by_name(fake, capsys):
    fake(NETWORKS)
    assert main(["network", "ls"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NETWORK ID     NAME      DRIVER    SCOPE",
        "cccc00000000   db        overlay   swarm",
        "aaaa00000000   ingress   overlay   swarm",
        "bbbb00000000   web_net   overlay   swarm"]


@pytest.mark.parametrize("filters, names", [
    (["name=net"], ["web_net"]),                             # all or part of the name
    (["name=db", "name=web"], ["db", "web_net"]),            # one key's values are alternatives
    (["label=team"], ["db", "web_net"]),
    (["label=team=b"], ["db"]),
    (["label=team", "name=web"], ["web_net"]),               # keys must all match
    (["id=aaaa"], ["ingress"]),
    (["driver=overlay", "scope=swarm"], ["db", "ingress", "web_net"]),
    (["scope=local"], []),
])
def test_ls_filters(filters, names):
    wanted = network.ls_filters(filters)
    assert sorted(n["spec"]["name"] for n in NETWORKS if network.matches(n, wanted)) == names


def test_ls_quiet_format_and_bad_filter(fake, capsys):
    fake(NETWORKS)
    assert main(["network", "ls", "-q", "-f", "name=db"]) == 0
    assert capsys.readouterr().out == "cccc" + "0" * 21 + "\n"
    assert main(["network", "ls", "--format", "{{.Name}} {{.Driver}} {{json .Internal}}"]) == 0
    assert capsys.readouterr().out.splitlines() == ["db overlay false", "ingress overlay false",
                                                    "web_net overlay false"]
    assert main(["network", "ls", "--format", "table {{.ID}}\\t{{.Name}}"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["NETWORK ID     NAME", "cccc00000000   db"]
    assert main(["network", "ls", "--format", "json"]) == 0
    assert [n["spec"]["name"] for n in json.loads(capsys.readouterr().out)] == ["db", "ingress", "web_net"]
    assert main(["network", "ls", "-f", "colour=red"]) == 1
    assert capsys.readouterr().err.startswith("Error: invalid filter 'colour'")


# -- network inspect -----------------------------------------------------------------------------------
def test_inspect_shows_dockers_keys():
    view = network.docker_view(stored("web_net", labels={"a": "b"}, options={"multicast": "false"},
                                      attachable=True))
    assert view["Name"] == "web_net" and view["Id"] == NET_ID
    assert (view["Driver"], view["Scope"], view["Attachable"], view["Internal"], view["Ingress"]) == \
        ("overlay", "swarm", True, False, False)
    assert view["IPAM"] == {"Driver": "default", "Options": None, "Config": [{"Subnet": "10.0.1.0/24"}]}
    assert view["Options"] == {"multicast": "false", "com.docker.network.driver.overlay.vxlanid_list": "4097"}
    assert view["Labels"] == {"a": "b"}
    assert view["Created"] == "2023-11-14T22:13:20.500000Z"


def test_inspect_prints_what_it_found_then_an_error_per_missing_one(fake, capsys):
    fake(NETWORKS)
    assert main(["network", "inspect", "db", "nope"]) == 1
    out, err = capsys.readouterr()
    assert [n["Name"] for n in json.loads(out)] == ["db"]
    assert err == "Error: No such network: nope\n"
    assert main(["network", "inspect", "-f", "{{.Name}} {{json .Labels}} {{(index .IPAM.Config 0)}}",
                 "db"]) == USAGE_EXIT
    assert "swarmpy's --format knows" in capsys.readouterr().err
    assert main(["network", "inspect", "--format", "{{.Name}}/{{.IPAM.Driver}} {{json .Labels}}", "db",
                 "web_net"]) == 0
    assert capsys.readouterr().out.splitlines() == ['db/default {"team": "b"}',
                                                    'web_net/default {"com.docker.stack.namespace": "st", '
                                                    '"team": "a"}']


@pytest.mark.parametrize("template, data, expected", [
    ("{{.A}}", {"A": None}, "<nil>"),
    ("{{ .A.B }}", {"A": {"B": True}}, "true"),
    ("{{.A}}", {"A": {"y": 1, "x": "s"}}, "map[x:s y:1]"),
    ("{{.A}}", {"A": [1, "two"]}, "[1 two]"),
    ("{{json .A}}\\n", {"A": [1]}, "[1]\n"),
    ("{{.}}", {"A": 1}, "map[A:1]"),
])
def test_go_template_subset(template, data, expected):
    assert network.render(template, data) == expected


def test_an_unknown_template_field_is_an_error():
    with pytest.raises(UsageError, match="can't evaluate field Nope"):
        network.render("{{.Nope}}", {"A": 1})


# -- network rm ----------------------------------------------------------------------------------------
def test_rm_prints_each_name_and_fails_per_name(fake, capsys):
    client = fake(NETWORKS, refuse={"web_net": "rpc error: code = FailedPrecondition desc = network web_net "
                                               "is in use by service web"})
    assert main(["network", "rm", "db", "web_net", "nope", "ingress"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == ["db", "ingress"]
    assert err.splitlines() == [
        "Error response from daemon: rpc error: code = FailedPrecondition desc = network web_net is in use by "
        "service web", "Error response from daemon: network nope not found"]
    assert [c[:2] for c in client.calls] == [("DELETE", f"/networks/{r}") for r in ("db", "web_net", "nope",
                                                                                    "ingress")]
    assert main(["network", "remove", "db"]) == 0


# -- service create / update -------------------------------------------------------------------------
def create_spec(*flags: str) -> dict:
    return service.spec_from_args(parse("service", "create", "--name", "web", *flags, "busybox"))


@pytest.mark.parametrize("text, expected", [
    ("front", {"target": "front", "aliases": []}),
    ("name=back,alias=api,alias=v1", {"target": "back", "aliases": ["api", "v1"]}),
    ("alias=a, name=back", {"target": "back", "aliases": ["a"]}),
    ("target=back", {"target": "back", "aliases": []}),
])
def test_network_syntax(text, expected):
    assert containerspec.parse_network(text) == expected


@pytest.mark.parametrize("text, message", [
    ("alias=a", "network name/id is not specified"),
    ("name=n,colour=red", "invalid field key colour"),
    ("name=n,alias", "invalid field alias"),
    ("name=n,driver-opt=x=y", "driver-opt is not supported"),
])
def test_network_syntax_errors(text, message):
    with pytest.raises(UsageError, match=message):
        create_spec("--network", text)


def test_create_network_and_endpoint_mode_flags():
    spec = create_spec("--network", "front", "--network", "name=back,alias=api", "--endpoint-mode", "DNSRR")
    assert spec["networks"] == [{"target": "front", "aliases": []}, {"target": "back", "aliases": ["api"]}]
    assert spec["endpoint_mode"] == "dnsrr"
    parsed = parse_service_spec(spec)
    assert [a.target for a in parsed.networks] == ["front", "back"] and parsed.endpoint_mode == "dnsrr"
    plain = create_spec()
    assert plain["networks"] == [] and "endpoint_mode" not in plain
    with pytest.raises(UsageError, match='invalid argument "rr" for "--endpoint-mode" flag: use vip or dnsrr'):
        create_spec("--endpoint-mode", "rr")


IDS = {"front": "f" * 25, "back": "b" * 25, "other": "0" * 25}


def resolve(ref: str) -> str:
    if ref in IDS.values():
        return ref
    if ref not in IDS:
        raise DaemonError(404, f"network {ref} not found")
    return IDS[ref]


def updated(spec: dict, *flags: str) -> dict:
    args = parse("service", "update", *flags, "web")
    spec = dict(spec)
    containerspec.apply_update(args, spec)
    containerspec.update_networks(args, spec, resolve)
    return spec


def test_update_network_add_and_rm_by_name_or_id():
    spec = {"networks": [{"target": IDS["front"], "aliases": ["www"]}], "endpoint_mode": "vip"}
    out = updated(spec, "--network-add", "name=back,alias=api", "--network-rm", "front")
    assert out["networks"] == [{"target": IDS["back"], "aliases": ["api"]}]
    out = updated(spec, "--network-add", "other", "--network-add", "back")
    assert out["networks"] == sorted([{"target": IDS["front"], "aliases": ["www"]},
                                      {"target": IDS["other"], "aliases": []},
                                      {"target": IDS["back"], "aliases": []}], key=lambda a: a["target"])
    assert updated(spec, "--network-rm", IDS["front"])["networks"] == []
    assert updated(spec, "--endpoint-mode", "dnsrr")["endpoint_mode"] == "dnsrr"
    untouched = updated(spec)                             # no network flag: the list stays as stored
    assert (untouched["networks"], untouched["endpoint_mode"]) == (spec["networks"], "vip")
    with pytest.raises(DaemonError, match="^service is already attached to network front$"):
        updated(spec, "--network-add", "front")
    with pytest.raises(DaemonError, match="^network gone not found$"):
        updated(spec, "--network-rm", "gone")


def test_service_update_resolves_names_through_the_api(fake, monkeypatch):
    client = fake([stored("back", IDS["back"])])
    current = {"id": "s1", "version": 7, "spec": {"name": "web", "networks": [], "endpoint_mode": "vip",
                                                   "env": []}}
    sent = {}
    monkeypatch.setattr(client, "get", lambda url, **q: current if url.startswith("/services/")
                        else FakeClient.get(client, url))

    def call(method, url, body=None, query=None):
        sent.update(method=method, url=url, body=body, query=query)
        return current
    monkeypatch.setattr(client, "call", call)
    assert main(["service", "update", "--network-add", "back", "web"]) == 0
    assert sent["url"] == "/services/s1/update" and sent["query"] == {"version": 7}
    assert sent["body"]["networks"] == [{"target": IDS["back"], "aliases": []}]
