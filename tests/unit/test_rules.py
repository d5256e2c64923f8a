"""worker/network/rules.py: the rendered iptables-restore text, and the apply helpers' calls
(subprocess faked).  The real-kernel checks are in tests/integration/test_rules_netns.py."""
from __future__ import annotations

import random
import re
import subprocess

import pytest

from worker.network import rules


def svc(vip="10.0.1.3", addrs=("10.0.1.7", "10.0.1.8"), mode="vip", name="stack_web", ports=()):
    return {"id": f"id-{name}", "name": name, "aliases": [], "endpoint_mode": mode, "vip": vip,
            "ports": list(ports),
            "tasks": [{"id": f"t{i}", "name": f"{name}.{i}", "addr": a, "node_id": "n1"}
                      for i, a in enumerate(addrs)]}


def tables(text: str) -> dict[str, list[str]]:
    """{table: [lines between *table and COMMIT]}; asserts the framing."""
    out, cur = {}, None
    for line in text.splitlines():
        if line.startswith("*"):
            assert cur is None
            cur = line[1:]
            out[cur] = []
        elif line == "COMMIT":
            assert cur is not None
            cur = None
        else:
            assert cur is not None, line
            out[cur].append(line)
    assert cur is None
    return out


def rule_lines(lines, chain):
    return [ln for ln in lines if ln.startswith(f"-A {chain} ")]


def prob(line):
    m = re.search(r"--probability (\S+)", line)
    return float(m.group(1)) if m else None


def dest(line):
    return re.search(r"--to-destination (\S+)", line).group(1)


def shares(lines):
    """The share of new connections each rule gets, walking the chain as the kernel does."""
    left, out = 1.0, []
    for line in lines:
        p = prob(line)
        p = 1.0 if p is None else p
        out.append(left * p)
        left *= 1 - p
    return out


# -- probabilities ------------------------------------------------------------------------------
def test_probabilities():
    assert rules.probabilities(1) == [None]
    assert rules.probabilities(2) == ["0.5000000000", None]
    assert rules.probabilities(4) == ["0.2500000000", "0.3333333333", "0.5000000000", None]
    assert rules.probabilities(0) == []


# -- VIPs ---------------------------------------------------------------------------------------
def test_vip_rules_balance_with_1_over_n_minus_i():
    text = rules.vip_rules([svc(addrs=("10.0.1.9", "10.0.1.10", "10.0.1.7", "10.0.1.8"))])
    t = tables(text)
    assert list(t) == ["nat", "filter"]
    assert t["nat"][0] == ":SWARMPY-VIP - [0:0]"
    assert t["filter"] == [":SWARMPY-VIP-EMPTY - [0:0]"]
    nat = rule_lines(t["nat"], "SWARMPY-VIP")
    assert len(nat) == 4 * len(rules.VIP_PROTOCOLS)
    for proto in ("tcp", "udp"):
        mine = [ln for ln in nat if f" -p {proto} " in ln]
        assert len(mine) == 4
        assert all(ln.startswith("-A SWARMPY-VIP -d 10.0.1.3/32 ") for ln in mine)
        assert [prob(ln) for ln in mine] == [pytest.approx(1 / 4), pytest.approx(1 / 3),
                                              pytest.approx(1 / 2), None]
        assert "statistic" not in mine[-1]
        # sorted numerically (10.0.1.10 after 10.0.1.9), no port rewriting
        assert [dest(ln) for ln in mine] == ["10.0.1.7", "10.0.1.8", "10.0.1.9", "10.0.1.10"]
        assert shares(mine) == pytest.approx([0.25] * 4, abs=1e-9)
        assert all(ln.endswith(f"-j DNAT --to-destination {dest(ln)}") for ln in mine)
        assert all("-m statistic --mode random --probability" in ln for ln in mine[:-1])


def test_vip_rules_single_backend_is_unconditional():
    nat = rule_lines(tables(rules.vip_rules([svc(addrs=("10.0.1.7",))]))["nat"], "SWARMPY-VIP")
    assert len(nat) == len(rules.VIP_PROTOCOLS)
    assert all("statistic" not in ln and dest(ln) == "10.0.1.7" for ln in nat)


def test_vip_rules_duplicate_and_missing_task_addresses():
    s = svc(addrs=("10.0.1.8", "10.0.1.7", "10.0.1.8", ""))
    s["tasks"].append({"id": "tx"})                   # not given an address yet
    nat = [ln for ln in tables(rules.vip_rules([s]))["nat"] if " -p tcp " in ln]
    assert [dest(ln) for ln in nat] == ["10.0.1.7", "10.0.1.8"]
    assert prob(nat[0]) == pytest.approx(0.5)


def test_vip_without_backends_is_rejected_in_filter():
    t = tables(rules.vip_rules([svc(vip="10.0.1.4", addrs=()), svc(vip="10.0.1.3", name="b")]))
    assert all("10.0.1.4" not in ln for ln in t["nat"])
    empty = rule_lines(t["filter"], "SWARMPY-VIP-EMPTY")
    assert len(empty) == 2
    assert empty[0].startswith("-A SWARMPY-VIP-EMPTY -d 10.0.1.4/32 -p tcp ")
    assert empty[0].endswith("-j REJECT --reject-with tcp-reset")
    assert empty[1].startswith("-A SWARMPY-VIP-EMPTY -d 10.0.1.4/32 ")
    assert " -p " not in empty[1]
    assert empty[1].endswith("-j REJECT --reject-with icmp-port-unreachable")
    assert all("REJECT" not in ln for ln in t["nat"])     # REJECT is a filter-table target


def test_vip_rules_skip_dnsrr_and_vipless_services():
    text = rules.vip_rules([svc(vip="", mode="dnsrr", name="d"),
                            svc(vip="10.0.1.9", mode="dnsrr", name="d2"),
                            svc(vip="", name="novip")])
    t = tables(text)
    assert t == {"nat": [":SWARMPY-VIP - [0:0]"], "filter": [":SWARMPY-VIP-EMPTY - [0:0]"]}
    assert tables(rules.vip_rules([])) == t


def test_vip_rules_are_deterministic():
    services = [svc(vip=f"10.0.1.{v}", name=f"s{v}",
                    addrs=tuple(f"10.0.2.{a}" for a in range(v, v + 5))) for v in (30, 4, 100)]
    services.append(svc(vip="10.0.1.50", addrs=(), name="empty"))
    want = rules.vip_rules(services)
    rnd = random.Random(7)
    for _ in range(10):
        shuffled = [dict(s, tasks=rnd.sample(s["tasks"], len(s["tasks"]))) for s in services]
        rnd.shuffle(shuffled)
        assert rules.vip_rules(shuffled) == want
    vips = [re.search(r"-d (\S+)/32", ln).group(1)
            for ln in rule_lines(tables(want)["nat"], "SWARMPY-VIP")]
    assert list(dict.fromkeys(vips)) == ["10.0.1.4", "10.0.1.30", "10.0.1.100"]


@pytest.mark.parametrize("bad", ["10.0.1", "10.0.1.3\n-A OUTPUT -j ACCEPT", "::1", 167837955,
                                 "10.0.1.3/32"])
def test_vip_rules_refuse_malformed_addresses(bad):
    with pytest.raises(ValueError):
        rules.vip_rules([svc(vip=bad)])
    with pytest.raises(ValueError):
        rules.vip_rules([svc(addrs=("10.0.1.7", bad))])


def test_vip_rules_refuse_a_vip_used_twice():
    with pytest.raises(ValueError, match="10.0.1.3"):
        rules.vip_rules([svc(name="a"), svc(name="b")])


def test_comments_are_sanitised():
    text = rules.vip_rules([svc(name='we"b x\n-A')])
    assert "--comment we_b_x_-A " in text
    # *nat, the chain, 2 backends x protocols, COMMIT, *filter, the chain, COMMIT: no line injected
    assert len(text.splitlines()) == 2 + 2 * len(rules.VIP_PROTOCOLS) + 1 + 3


# -- ingress ------------------------------------------------------------------------------------
def ingress_view(services, addr="10.255.0.2"):
    return {"id": "ing", "name": "ingress", "subnet": "10.255.0.0/16", "vni": 4096,
            "internal": False, "multicast": False, "ingress": True, "addr": addr,
            "peers": ["10.77.0.12"], "services": services}


def port(published, target=80, protocol="tcp", mode="ingress"):
    return {"protocol": protocol, "target": target, "published": published, "mode": mode}


def test_ingress_rules_dnat_snat_forward():
    view = ingress_view([svc(addrs=("10.255.0.9", "10.255.0.7", "10.255.0.8"),
                             ports=[port(8080), port(5353, 53, "udp")])])
    nat_text, filt_text = rules.ingress_rules(view, "swi-ingress")
    nat, filt = tables(nat_text), tables(filt_text)
    assert list(nat) == ["nat"] and list(filt) == ["filter"]
    nat, filt = nat["nat"], filt["filter"]
    assert nat[:3] == [":SWARMPY-INGRESS - [0:0]", ":SWARMPY-INGRESS-POST - [0:0]",
                       ":SWARMPY-INGRESS-SELF - [0:0]"]
    assert rule_lines(nat, "SWARMPY-INGRESS-SELF") == []      # no node forwarding asked
    dnat = rule_lines(nat, "SWARMPY-INGRESS")
    tcp = [ln for ln in dnat if "--dport 8080" in ln]
    udp = [ln for ln in dnat if "--dport 5353" in ln]
    assert len(tcp) == 3 and len(udp) == 3 and len(dnat) == 6
    assert all(ln.startswith("-A SWARMPY-INGRESS -p tcp -m tcp --dport 8080 ") for ln in tcp)
    assert all(ln.startswith("-A SWARMPY-INGRESS -p udp -m udp --dport 5353 ") for ln in udp)
    assert [dest(ln) for ln in tcp] == ["10.255.0.7:80", "10.255.0.8:80", "10.255.0.9:80"]
    assert [dest(ln) for ln in udp] == ["10.255.0.7:53", "10.255.0.8:53", "10.255.0.9:53"]
    assert [prob(ln) for ln in tcp] == [pytest.approx(1 / 3), pytest.approx(1 / 2), None]
    assert shares(tcp) == pytest.approx([1 / 3] * 3)
    post = rule_lines(nat, "SWARMPY-INGRESS-POST")
    assert len(post) == 2
    for line, (proto, p) in zip(post, [("tcp", 8080), ("udp", 5353)]):
        assert line.startswith(f"-A SWARMPY-INGRESS-POST -o swi-ingress -p {proto} -m conntrack "
                               f"--ctstate DNAT --ctorigdstport {p} ")
        assert line.endswith("-j SNAT --to-source 10.255.0.2")
    assert filt == [
        ":SWARMPY-FORWARD - [0:0]",
        ":SWARMPY-INGRESS-EMPTY - [0:0]",
        "-A SWARMPY-FORWARD -o swi-ingress -m conntrack --ctstate DNAT -j ACCEPT",
        "-A SWARMPY-FORWARD -i swi-ingress -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]


def on_nodes(service, underlays):
    """`service` with each task's node underlay address set, in task order."""
    for task, underlay in zip(service["tasks"], underlays):
        task["underlay"] = underlay
    return service


def test_node_forwarding_sends_remote_tasks_to_their_node_over_the_link():
    # This node is 10.77.0.13 (ingress 10.255.0.2) with task .7; .8 and .9 run on 10.77.0.12,
    # reached over the link at its ingress address 10.255.0.4; .6 on a node with no route.
    web = on_nodes(svc(addrs=("10.255.0.7", "10.255.0.8", "10.255.0.9", "10.255.0.6"), ports=[port(8080)]),
                   ["10.77.0.13", "10.77.0.12", "10.77.0.12", "10.77.0.14"])
    nat_text, filt_text = rules.ingress_rules(ingress_view([web]), "br0",
                                              forward_to={"10.77.0.12": "10.255.0.4"}, underlay="10.77.0.13")
    nat, filt = tables(nat_text)["nat"], tables(filt_text)["filter"]
    chain = rule_lines(nat, "SWARMPY-INGRESS")
    # from the node itself: the overlay spread, before anything else
    assert chain[0] == "-A SWARMPY-INGRESS -m addrtype --src-type LOCAL -j SWARMPY-INGRESS-SELF"
    assert [dest(ln) for ln in rule_lines(nat, "SWARMPY-INGRESS-SELF")] == [
        "10.255.0.6:80", "10.255.0.7:80", "10.255.0.8:80", "10.255.0.9:80"]
    # sent here by another node (to this node's ingress address): the local task only
    assert chain[1] == ("-A SWARMPY-INGRESS -d 10.255.0.2/32 -p tcp -m tcp --dport 8080 -m comment "
                        "--comment stack_web -j DNAT --to-destination 10.255.0.7:80")
    # from outside: every task keeps 1/4, the forwarded ones at their node on the published port
    spread = chain[2:]
    assert [dest(ln) for ln in spread] == ["10.255.0.6:80", "10.255.0.7:80", "10.255.0.4:8080",
                                           "10.255.0.4:8080"]
    assert shares(spread) == pytest.approx([1 / 4] * 4)
    post = rule_lines(nat, "SWARMPY-INGRESS-POST")
    assert post == [
        # forwarded here by another node: not SNATed (the task sees that node's address)
        "-A SWARMPY-INGRESS-POST -o br0 -p tcp -m conntrack --ctstate DNAT --ctorigdst 10.255.0.2/32 "
        "! --ctorigsrc 10.255.0.0/16 --ctorigdstport 8080 -m comment --comment stack_web -j RETURN",
        "-A SWARMPY-INGRESS-POST -o br0 -p tcp -m conntrack --ctstate DNAT --ctorigdstport 8080 "
        "-m comment --comment stack_web -j SNAT --to-source 10.255.0.2",
        "-A SWARMPY-INGRESS-POST ! -o br0 -p tcp -m conntrack --ctstate DNAT --ctorigdstport 8080 "
        "-m comment --comment stack_web -j SNAT --to-source 10.77.0.13"]
    assert rule_lines(filt, "SWARMPY-FORWARD")[2] == (
        "-A SWARMPY-FORWARD -p tcp -m conntrack --ctstate DNAT --ctorigdstport 8080 "
        "-m comment --comment stack_web -j ACCEPT")


def test_node_forwarding_with_no_local_task_and_no_remote_one():
    remote = on_nodes(svc(name="a", addrs=("10.255.0.8",), ports=[port(80)]), ["10.77.0.12"])
    local = on_nodes(svc(name="b", addrs=("10.255.0.7",), vip="10.0.1.4", ports=[port(81)]), ["10.77.0.13"])
    nat_text, filt_text = rules.ingress_rules(ingress_view([remote, local]), "br0",
                                              forward_to={"10.77.0.12": "10.255.0.4"}, underlay="10.77.0.13")
    nat = tables(nat_text)["nat"]
    chain = rule_lines(nat, "SWARMPY-INGRESS")[1:]
    # no task here for port 80: nothing to serve a forwarded connection locally
    assert [(re.search(r"--dport (\d+)", ln).group(1), dest(ln), " -d " in ln) for ln in chain] == [
        ("80", "10.255.0.4:80", False), ("81", "10.255.0.7:80", True), ("81", "10.255.0.7:80", False)]
    # port 81 has no remote task: no SNAT to the underlay, no extra FORWARD rule
    assert [ln for ln in rule_lines(nat, "SWARMPY-INGRESS-POST") if "! -o" in ln and "81 " in ln] == []
    # port 80 has no local task: nothing forwarded here to leave un-SNATed
    assert [ln for ln in rule_lines(nat, "SWARMPY-INGRESS-POST") if "RETURN" in ln and "dport 80 " in ln] == []
    assert len(rule_lines(tables(filt_text)["filter"], "SWARMPY-FORWARD")) == 3


def test_a_node_forwarded_to_serves_with_its_own_tasks_even_with_nothing_to_forward():
    # All of this node's tasks are local (nothing to forward), but other nodes may forward here.
    web = on_nodes(svc(addrs=("10.255.0.7",), ports=[port(8080)]), ["10.77.0.12"])
    nat = tables(rules.ingress_rules(ingress_view([web]), "br0", underlay="10.77.0.12")[0])["nat"]
    assert rule_lines(nat, "SWARMPY-INGRESS")[0].startswith("-A SWARMPY-INGRESS -d 10.255.0.2/32 -p tcp ")
    assert rule_lines(nat, "SWARMPY-INGRESS-SELF") == []         # no --src-type LOCAL jump either
    assert "RETURN" in rule_lines(nat, "SWARMPY-INGRESS-POST")[0]
    # nodes sharing one engine: no underlay, the rules as without node forwarding
    plain = rules.ingress_rules(ingress_view([web]), "br0")
    assert " -d 10.255.0.2/32 " not in plain[0] and "RETURN" not in plain[0]


def test_node_forwarding_needs_this_nodes_underlay():
    web = on_nodes(svc(addrs=("10.255.0.8",), ports=[port(80)]), ["10.77.0.12"])
    with pytest.raises(ValueError, match="underlay"):
        rules.ingress_rules(ingress_view([web]), "br0", forward_to={"10.77.0.12": "10.255.0.4"})


def test_ingress_port_without_backends_is_rejected():
    view = ingress_view([svc(addrs=(), name="idle", ports=[port(8081), port(9000, 9, "udp")]),
                         svc(name="web", addrs=("10.255.0.7",), ports=[port(8080)])])
    nat_text, filt_text = rules.ingress_rules(view, "br0")
    nat, filt = tables(nat_text)["nat"], tables(filt_text)["filter"]
    assert all("8081" not in ln and "9000" not in ln for ln in nat)
    assert rule_lines(nat, "SWARMPY-INGRESS") == [
        "-A SWARMPY-INGRESS -p tcp -m tcp --dport 8080 -m comment --comment web "
        "-j DNAT --to-destination 10.255.0.7:80"]
    assert rule_lines(filt, "SWARMPY-INGRESS-EMPTY") == [
        "-A SWARMPY-INGRESS-EMPTY -p tcp -m tcp --dport 8081 -m comment --comment idle "
        "-j REJECT --reject-with tcp-reset",
        "-A SWARMPY-INGRESS-EMPTY -p udp -m udp --dport 9000 -m comment --comment idle "
        "-j REJECT --reject-with icmp-port-unreachable"]


def test_ingress_skips_host_mode_and_unpublished_ports_and_defaults():
    view = ingress_view([svc(ports=[port(8090, mode="host"), port(None), port(0),
                                    {"target": 80, "published": 8080}])])   # tcp, ingress
    nat_text, filt_text = rules.ingress_rules(view, "br0")
    dnat = rule_lines(tables(nat_text)["nat"], "SWARMPY-INGRESS")
    assert {re.search(r"--dport (\d+)", ln).group(1) for ln in dnat} == {"8080"}
    assert all(" -p tcp " in ln for ln in dnat)
    assert "8090" not in nat_text + filt_text
    # dnsrr services publish in host mode in practice, but an ingress port is meshed regardless
    assert rules.ingress_rules(ingress_view([]), "br0") == (
        "*nat\n:SWARMPY-INGRESS - [0:0]\n:SWARMPY-INGRESS-POST - [0:0]\n:SWARMPY-INGRESS-SELF - [0:0]\n"
        "COMMIT\n",
        "*filter\n:SWARMPY-FORWARD - [0:0]\n:SWARMPY-INGRESS-EMPTY - [0:0]\n"
        "-A SWARMPY-FORWARD -o br0 -m conntrack --ctstate DNAT -j ACCEPT\n"
        "-A SWARMPY-FORWARD -i br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        "COMMIT\n")


def test_ingress_rules_are_deterministic():
    services = [svc(name="a", addrs=("10.255.0.30", "10.255.0.4"), ports=[port(9000), port(80, 8)]),
                svc(name="b", addrs=("10.255.0.5",), ports=[port(443, 8443), port(53, 53, "udp")]),
                svc(name="c", addrs=(), ports=[port(7000)])]
    want = rules.ingress_rules(ingress_view(services), "br0")
    rnd = random.Random(3)
    for _ in range(10):
        shuffled = [dict(s, tasks=rnd.sample(s["tasks"], len(s["tasks"])),
                         ports=rnd.sample(s["ports"], len(s["ports"]))) for s in services]
        rnd.shuffle(shuffled)
        assert rules.ingress_rules(ingress_view(shuffled), "br0") == want
    dports = [re.search(r"--dport (\d+)", ln).group(1)
              for ln in rule_lines(tables(want[0])["nat"], "SWARMPY-INGRESS")]
    assert list(dict.fromkeys(dports)) == ["80", "443", "9000", "53"]   # by (protocol, port)


def test_ingress_sctp_port():
    nat_text, _ = rules.ingress_rules(ingress_view([svc(ports=[port(3868, 3868, "sctp")])]), "br0")
    assert "-A SWARMPY-INGRESS -p sctp -m sctp --dport 3868 " in nat_text


@pytest.mark.parametrize("bridge", ["", "a" * 16, "br 0", "br/0", "br0\n-A", None])
def test_ingress_refuses_bad_bridge_names(bridge):
    with pytest.raises(ValueError):
        rules.ingress_rules(ingress_view([]), bridge)


def test_ingress_refuses_bad_input():
    with pytest.raises(ValueError):
        rules.ingress_rules(ingress_view([], addr=""), "br0")
    with pytest.raises(ValueError):
        rules.ingress_rules(ingress_view([svc(ports=[port(70000)])]), "br0")
    with pytest.raises(ValueError):
        rules.ingress_rules(ingress_view([svc(ports=[port(80, target=None)])]), "br0")
    with pytest.raises(ValueError):
        rules.ingress_rules(ingress_view([svc(ports=[port(80, protocol="icmp")])]), "br0")
    with pytest.raises(ValueError, match="two services"):
        rules.ingress_rules(ingress_view([svc(name="a", ports=[port(80)]),
                                          svc(name="b", ports=[port(80, 81)])]), "br0")
    # same number, different protocol: fine
    rules.ingress_rules(ingress_view([svc(name="a", ports=[port(53, 53, "udp")]),
                                      svc(name="b", ports=[port(53, 53, "tcp")])]), "br0")


def test_removal_rules_declare_then_delete():
    assert rules.removal_rules({"nat": ["A", "B"], "filter": ["C"]}) == (
        "*nat\n:A - [0:0]\n:B - [0:0]\n-X A\n-X B\nCOMMIT\n*filter\n:C - [0:0]\n-X C\nCOMMIT\n")


# -- applying (subprocess faked) -----------------------------------------------------------------
class FakeRun:
    """Stands in for subprocess.run: records argv/input, answers from `rc` (argv -> returncode)."""

    def __init__(self, rc=None, stderr="", raise_exc=None):
        self.calls: list[tuple[list[str], str | None, float]] = []
        self.rc = rc or (lambda argv: 0)
        self.stderr = stderr
        self.raise_exc = raise_exc

    def __call__(self, argv, input=None, capture_output=False, text=False, timeout=None, env=None):
        assert timeout is not None and timeout > 0          # every call has a timeout
        assert capture_output and text
        self.calls.append((list(argv), input, timeout))
        if self.raise_exc:
            raise self.raise_exc
        rc = self.rc(argv)
        return subprocess.CompletedProcess(argv, rc, "", self.stderr if rc else "")


@pytest.fixture
def fake(monkeypatch):
    def install(**kw):
        f = FakeRun(**kw)
        monkeypatch.setattr(rules.subprocess, "run", f)
        monkeypatch.setattr(rules.shutil, "which", lambda name, path=None: f"/usr/sbin/{name}")
        return f
    return install


def test_apply_in_netns_argv(fake):
    f = fake()
    rules.apply_in_netns(1234, "*nat\nCOMMIT\n")
    rules.apply_in_netns(None, "*filter\nCOMMIT\n")
    assert f.calls[0][0] == ["nsenter", "--target=1234", "--net", "--",
                             "iptables-restore", "-w", "--noflush"]
    assert f.calls[0][1] == "*nat\nCOMMIT\n"
    assert f.calls[1][0] == ["iptables-restore", "-w", "--noflush"]


def test_apply_in_netns_errors(fake):
    fake(rc=lambda argv: 1, stderr="iptables-restore: line 2 failed\n")
    with pytest.raises(rules.RuleError, match="line 2 failed"):
        rules.apply_in_netns(None, "x")
    fake(raise_exc=subprocess.TimeoutExpired(["iptables-restore"], 30))
    with pytest.raises(rules.RuleError, match="no answer"):
        rules.apply_in_netns(None, "x")
    with pytest.raises(ValueError):
        rules.apply_in_netns(0, "x")


def test_hook_is_idempotent(fake):
    f = fake(rc=lambda argv: 0)                    # -C: already there
    assert rules.hook("nat", "OUTPUT", ("-j", "SWARMPY-VIP"), pid=7) is False
    assert [c[0] for c in f.calls] == [
        ["nsenter", "--target=7", "--net", "--", "iptables", "-w", "-t", "nat", "-C", "OUTPUT",
         "-j", "SWARMPY-VIP"]]
    f = fake(rc=lambda argv: 1 if "-C" in argv else 0)
    assert rules.hook("nat", "PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL",
                                            "-j", "SWARMPY-INGRESS")) is True
    assert f.calls[1][0] == ["iptables", "-w", "-t", "nat", "-I", "PREROUTING", "1", "-m",
                             "addrtype", "--dst-type", "LOCAL", "-j", "SWARMPY-INGRESS"]
    fake(rc=lambda argv: 1, stderr="Chain 'DOCKER-USER' does not exist")
    with pytest.raises(rules.RuleError, match="DOCKER-USER"):
        rules.hook("filter", "DOCKER-USER", ("-j", "SWARMPY-FORWARD"))


def test_unhook_deletes_every_copy(fake):
    present = [2]

    def rc(argv):
        if "-C" in argv:
            return 0 if present[0] else 1
        if "-D" in argv:
            present[0] -= 1
        return 0
    f = fake(rc=rc)
    assert rules.unhook("nat", "OUTPUT", ("-j", "X")) == 2
    assert sum("-D" in c[0] for c in f.calls) == 2


def test_sync_ingress_hooks_into_docker_user_or_forward(fake):
    view = ingress_view([svc(ports=[port(8080)])])

    def run(docker_user: bool):
        def rc(argv):
            if "-L" in argv:
                return 0 if docker_user else 1
            return 1 if "-C" in argv else 0
        f = fake(rc=rc)
        rules.sync_ingress(view, "br0", pid=42)
        return [c[0][4:] for c in f.calls]           # without the nsenter prefix

    calls = run(docker_user=True)
    assert calls[0] == ["iptables-restore", "-w", "--noflush"]
    inserted = [c for c in calls if "-I" in c]
    assert ["iptables", "-w", "-t", "filter", "-I", "DOCKER-USER", "1",
            "-j", "SWARMPY-FORWARD"] in inserted
    assert not any("FORWARD" in c and "-I" in c for c in calls)
    assert ["sh", "-c", 'printf %s "$1" > "$2"', "sh", "1",
            "/proc/sys/net/ipv4/conf/br0/route_localnet"] in calls
    assert {(c[3], c[5]) for c in inserted} == {
        ("nat", "PREROUTING"), ("nat", "OUTPUT"), ("nat", "POSTROUTING"), ("filter", "INPUT"),
        ("filter", "OUTPUT"), ("filter", "DOCKER-USER")}
    calls = run(docker_user=False)
    assert ["iptables", "-w", "-t", "filter", "-I", "FORWARD", "1",
            "-j", "SWARMPY-FORWARD"] in calls


def test_remove_ingress_unhooks_then_deletes_chains(fake):
    f = fake(rc=lambda argv: 1 if "-C" in argv else 0)   # nothing hooked
    rules.remove_ingress()
    argvs = [c[0] for c in f.calls]
    assert all(a[:5] == ["iptables", "-w", "-t", a[3], "-C"] for a in argvs[:-1])
    assert len(argvs) - 1 == len(rules.INGRESS_HOOKS) + len(rules.FORWARD_HOOKS)
    assert argvs[-1] == ["iptables-restore", "-w", "--noflush"]
    assert f.calls[-1][1] == rules.removal_rules(
        {"nat": ["SWARMPY-INGRESS", "SWARMPY-INGRESS-POST", "SWARMPY-INGRESS-SELF"],
         "filter": ["SWARMPY-FORWARD", "SWARMPY-INGRESS-EMPTY"]})
