"""Overlay networks as objects on a real one-node cluster: `swarmpy network ...`, the service
flags that attach to them, and the networks a stack makes and removes.

These tests check the cluster state only: services are made with `--replicas 0` (stack
services with `deploy.replicas: 0`), so nothing waits for a container on an overlay (the
agent's side of the networks is tested elsewhere)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _networks(cluster) -> dict[str, dict]:
    return {n["spec"]["name"]: n for n in cluster.get("/networks")}


def _ls_rows(cluster, *flags: str) -> list[list[str]]:
    return [line.split() for line in cluster.ok("network", "ls", *flags).splitlines()]


# -- network create / ls / inspect / rm -------------------------------------------------------------
def test_create_ls_inspect_rm(cluster):
    net_id = cluster.ok("network", "create", "--subnet", "10.250.1.0/24", "--attachable", "-o", "multicast=false",
                        "--label", "team=a", "netapi_a").strip()
    assert len(net_id) == 25 and net_id.isalnum(), net_id
    rows = _ls_rows(cluster)
    assert rows[0] == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [net_id[:12], "netapi_a", "overlay", "swarm"] in rows[1:], rows
    assert ["ingress", "overlay", "swarm"] in [r[1:] for r in rows[1:]], rows       # made with the cluster
    assert cluster.ok("network", "ls", "-q", "-f", "name=netapi_a").split() == [net_id]
    assert cluster.ok("network", "ls", "--format", "{{.Name}}", "-f", "label=team=a").split() == ["netapi_a"]

    (view,) = json.loads(cluster.ok("network", "inspect", "netapi_a"))
    assert (view["Name"], view["Id"], view["Driver"], view["Scope"]) == ("netapi_a", net_id, "overlay", "swarm")
    assert view["IPAM"]["Config"][0]["Subnet"] == "10.250.1.0/24"
    assert view["Attachable"] is True and view["Internal"] is False and view["Ingress"] is False
    assert view["Labels"] == {"team": "a"} and view["Options"]["multicast"] == "false"
    assert cluster.ok("network", "inspect", "-f", "{{.IPAM.Driver}} {{json .Labels}}", net_id[:10]) == \
        'default {"team": "a"}\n'
    stored = cluster.get(f"/networks/{net_id}")
    assert stored["subnet"] == "10.250.1.0/24" and stored["vni"] >= 4096 and stored["scope"] == "swarm"

    result = cluster.cli("network", "inspect", "netapi_a", "netapi_nope")
    assert result.rc == 1 and "Error: No such network: netapi_nope" in result.err, result
    assert [v["Name"] for v in json.loads(result.out)] == ["netapi_a"]

    assert cluster.ok("network", "rm", "netapi_a") == "netapi_a\n"
    assert "netapi_a" not in _networks(cluster)
    result = cluster.cli("network", "rm", "netapi_a")
    assert result.rc == 1 and "network netapi_a not found" in result.err, result


def test_a_duplicate_name_an_overlapping_subnet_and_a_local_driver_are_refused(cluster):
    cluster.ok("network", "create", "--subnet", "10.250.2.0/24", "netapi_dup")
    before = _networks(cluster)

    result = cluster.cli("network", "create", "netapi_dup")
    assert result.rc == 1 and "network with name netapi_dup already exists" in result.err, result
    result = cluster.cli("network", "create", "--subnet", "10.250.2.128/25", "netapi_overlap")
    assert result.rc == 1 and "overlaps with network netapi_dup (10.250.2.0/24)" in result.err, result
    result = cluster.cli("network", "create", "-d", "bridge", "netapi_bridge")
    assert result.rc == 1 and 'network driver "bridge" is not supported in a swarm' in result.err, result
    result = cluster.cli("network", "create", "-o", "encrypted=true", "netapi_enc")
    assert result.rc == 1 and "encrypted" in result.err, result
    assert cluster.api("POST", "/networks", body={"name": "netapi_bridge2", "driver": "bridge"})[0] == 400
    assert _networks(cluster) == before
    cluster.ok("network", "rm", "netapi_dup")


def test_removing_a_network_a_service_uses_is_refused_and_changes_nothing(cluster):
    net_id = cluster.ok("network", "create", "netapi_used").strip()
    cluster.create("netapi_user", "--replicas", "0", "--network", "name=netapi_used,alias=api")
    spec = cluster.service("netapi_user")["spec"]
    assert spec["networks"] == [{"target": net_id, "aliases": ["api"]}]       # stored by id
    before = _networks(cluster)["netapi_used"]

    result = cluster.cli("network", "rm", "netapi_used")
    assert result.rc == 1, result
    assert "network netapi_used is in use by service netapi_user" in result.err, result
    assert _networks(cluster)["netapi_used"] == before
    assert cluster.service("netapi_user")["spec"]["networks"] == spec["networks"]

    cluster.ok("service", "update", "--network-rm", "netapi_used", "netapi_user")
    assert cluster.service("netapi_user")["spec"]["networks"] == []
    cluster.ok("network", "rm", "netapi_used")
    cluster.ok("service", "rm", "netapi_user")


def test_service_network_flags(cluster):
    a = cluster.ok("network", "create", "netapi_fa").strip()
    b = cluster.ok("network", "create", "netapi_fb").strip()
    cluster.create("netapi_svc", "--replicas", "0", "--network", "netapi_fa", "--endpoint-mode", "dnsrr")
    service = cluster.service("netapi_svc")
    assert service["spec"]["networks"] == [{"target": a, "aliases": []}]
    assert service["spec"]["endpoint_mode"] == "dnsrr" and service["endpoint"]["mode"] == "dnsrr"

    cluster.ok("service", "update", "--network-add", "name=netapi_fb,alias=x", "--endpoint-mode", "vip",
               "netapi_svc")
    spec = cluster.service("netapi_svc")["spec"]
    assert spec["networks"] == sorted([{"target": a, "aliases": []}, {"target": b, "aliases": ["x"]}],
                                      key=lambda n: n["target"])
    assert spec["endpoint_mode"] == "vip"
    result = cluster.cli("service", "update", "--network-add", "netapi_fa", "netapi_svc")
    assert result.rc == 1 and "service is already attached to network netapi_fa" in result.err, result
    cluster.ok("service", "rm", "netapi_svc")
    cluster.ok("network", "rm", "netapi_fa", "netapi_fb")


def test_a_service_on_an_unknown_network_or_dnsrr_with_an_ingress_port_is_refused(cluster):
    result = cluster.cli("service", "create", "--name", "netapi_lost", "--replicas", "0",
                         "--network", "netapi_nowhere", cluster.image)
    assert result.rc == 1 and "network netapi_nowhere not found" in result.err, result
    result = cluster.cli("service", "create", "--name", "netapi_rr", "--replicas", "0", "--endpoint-mode", "dnsrr",
                         "-p", "18080:80", cluster.image)
    assert result.rc == 1 and "port published with ingress mode can't be used with dnsrr mode" in result.err, result
    assert not {"netapi_lost", "netapi_rr"} & cluster.service_names()
    # dnsrr with a host-mode port is fine (docker's rule)
    cluster.create("netapi_rrhost", "--replicas", "0", "--endpoint-mode", "dnsrr",
                   "-p", "mode=host,published=18081,target=80")
    cluster.ok("service", "rm", "netapi_rrhost")


# -- stacks -----------------------------------------------------------------------------------------
def test_stack_deploy_creates_its_networks_and_stack_rm_removes_them(cluster, tmp_path):
    cluster.ok("network", "create", "netapi_shared")
    path = _write(tmp_path, "nets.yml", f"""\
        services:
          web:
            image: {cluster.image}
            networks:
              front:
                aliases: [www]
              shared:
            deploy:
              replicas: 0
              endpoint_mode: dnsrr
          lone:
            image: {cluster.image}
            deploy:
              replicas: 0
        networks:
          front:
            attachable: true
            labels: [team=web]
            driver_opts:
              multicast: "false"
            ipam:
              config:
                - subnet: 10.250.7.0/24
          shared:
            external: true
            name: netapi_shared
          unused: {{}}
        """)
    out = cluster.ok("stack", "deploy", "-c", path, "sn")
    assert out.splitlines() == ["Creating network sn_default", "Creating network sn_front",
                                "Creating service sn_lone", "Creating service sn_web"], out
    nets = _networks(cluster)
    assert "sn_unused" not in nets
    front, default = nets["sn_front"], nets["sn_default"]
    assert front["subnet"] == "10.250.7.0/24" and front["spec"]["attachable"] is True
    assert front["spec"]["labels"] == {"team": "web", "com.docker.stack.namespace": "sn"}
    assert front["spec"]["options"] == {"multicast": "false"}
    assert default["spec"]["labels"] == {"com.docker.stack.namespace": "sn"}
    assert front["vni"] != default["vni"] and front["subnet"] != default["subnet"]
    web = cluster.service("sn_web")["spec"]
    assert sorted((n["target"], n["aliases"]) for n in web["networks"]) == sorted(
        [(front["id"], ["www", "web"]), (nets["netapi_shared"]["id"], ["web"])])
    assert web["endpoint_mode"] == "dnsrr"
    assert cluster.service("sn_lone")["spec"]["networks"] == [{"target": default["id"], "aliases": ["lone"]}]

    # A redeploy leaves the networks (and the unchanged services) alone.
    assert cluster.ok("stack", "deploy", "-c", path, "sn") == ""
    assert _networks(cluster)["sn_front"] == front

    out = cluster.ok("stack", "rm", "sn")
    assert out.splitlines() == ["Removing service sn_lone", "Removing service sn_web",
                                "Removing network sn_default", "Removing network sn_front"], out
    nets = _networks(cluster)
    assert not {"sn_default", "sn_front"} & set(nets) and "netapi_shared" in nets      # external: not the stack's
    cluster.ok("network", "rm", "netapi_shared")


def test_a_stack_refuses_a_missing_external_network_and_a_local_driver(cluster, tmp_path):
    missing = _write(tmp_path, "missing.yml", f"""\
        services:
          web:
            image: {cluster.image}
            networks: [outside]
            deploy: {{replicas: 0}}
          other:
            image: {cluster.image}
            deploy: {{replicas: 0}}
        networks:
          outside:
            external: true
            name: netapi_absent
        """)
    result = cluster.cli("stack", "deploy", "-c", missing, "sx")
    assert result.rc == 1, result
    assert ('network "netapi_absent" is declared as external, but could not be found. You need to create a '
            "swarm-scoped network before the stack is deployed") in result.err, result
    assert "sx_default" not in _networks(cluster) and "sx_other" not in cluster.service_names()

    bridge = _write(tmp_path, "bridge.yml", f"""\
        services:
          web:
            image: {cluster.image}
            networks: [back]
        networks:
          back:
            driver: bridge
        """)
    result = cluster.cli("stack", "deploy", "-c", bridge, "sx")
    assert result.rc == 1 and "networks.back.driver" in result.err and "driver: overlay" in result.err, result

    undefined = _write(tmp_path, "undefined.yml", f"""\
        services:
          web:
            image: {cluster.image}
            networks: [foo]
        """)
    result = cluster.cli("stack", "deploy", "-c", undefined, "sx")
    assert result.rc == 1 and 'service web: undefined network "foo"' in result.err, result
    assert not any(name.startswith("sx_") for name in _networks(cluster))


def test_a_network_another_stack_owns_is_not_taken_over(cluster, tmp_path):
    path = _write(tmp_path, "named.yml", f"""\
        services:
          web:
            image: {cluster.image}
            networks: [net]
            deploy: {{replicas: 0}}
        networks:
          net:
            name: netapi_fixed
        """)
    cluster.ok("stack", "deploy", "-c", path, "owner")
    assert _networks(cluster)["netapi_fixed"]["spec"]["labels"]["com.docker.stack.namespace"] == "owner"
    result = cluster.cli("stack", "deploy", "-c", path, "intruder")
    assert result.rc == 1 and "network with name netapi_fixed already exists" in result.err, result
    assert "intruder_web" not in cluster.service_names()
    cluster.ok("stack", "rm", "owner")
    assert "netapi_fixed" not in _networks(cluster)


# -- the address pool -------------------------------------------------------------------------------
def test_the_default_pool_gives_successive_subnets(make_cluster, tmp_path):
    node = make_cluster("--default-addr-pool", "10.123.0.0/16", "--default-addr-pool-mask-length", "24",
                        hostname="pool")
    assert _networks(node)["ingress"]["subnet"] == "10.123.0.0/24"
    node.ok("network", "create", "p1")
    node.ok("network", "create", "p2")
    nets = _networks(node)
    assert (nets["p1"]["subnet"], nets["p2"]["subnet"]) == ("10.123.1.0/24", "10.123.2.0/24")
    assert len({n["vni"] for n in nets.values()}) == 3
    node.ok("network", "rm", "p1")
    node.ok("network", "create", "p3")                    # the first free one again
    assert _networks(node)["p3"]["subnet"] == "10.123.1.0/24"
    # A stack's networks, made in one transaction, each get their own subnet and VNI.
    path = _write(tmp_path, "two.yml", f"""\
        services:
          a:
            image: {node.image}
            networks: [x, y]
            deploy: {{replicas: 0}}
        networks:
          x: {{}}
          y: {{}}
        """)
    node.ok("stack", "deploy", "-c", path, "two")
    nets = _networks(node)
    assert (nets["two_x"]["subnet"], nets["two_y"]["subnet"]) == ("10.123.3.0/24", "10.123.4.0/24")
    assert len({n["vni"] for n in nets.values()}) == len(nets)
