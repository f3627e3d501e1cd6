"""`mnist-dist doctor`: each finding's rule on made-up reports (launch.doctor.findings), then real ranks on
three testbed hosts: a clean testbed, one host behind a slow link and one host whose hosts file maps
a peer's name to a wrong address."""

import copy
import json
import sys

import pytest

from launch.doctor.findings import findings, render

pytestmark = pytest.mark.timeout(600)


def link(gbit):
    return {"gbit": gbit, "rtt_ms": 0.1}


def rank(r, host, **fields):
    base = {
        "rank": r,
        "host": host,
        "interface": "eth0",
        "address": f"10.0.0.{r + 1}",
        "resolved": {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3"},
        "cpus": [2 * r, 2 * r + 1],
        "gpus": [],
        "node_gpus": 0,
        "cuda_visible_devices": None,
        "clock_offset_s": 0.001,
    }
    return {**base, **fields}


CLEAN = {
    "nodes": ["n1", "n2", "n3"],
    "ranks": [rank(0, "n1"), rank(1, "n2"), rank(2, "n3")],
    "cpus_per_rank": 2,
    "links": [[None, link(9.0), link(9.5)], [link(9.2), None, link(9.1)], [link(9.4), link(9.3), None]],
    "allreduce": {"gloo": [{"bytes": 1024, "seconds": 1e-4, "algbw": 0.01, "busbw": 0.0133}]},
}


def with_change(change):
    report = copy.deepcopy(CLEAN)
    change(report)
    return report


@pytest.mark.parametrize(
    "change,expected",
    [
        (lambda r: None, []),
        (
            lambda r: r["links"][0].__setitem__(2, link(0.9)),
            ["slow link n1 -> n3: 0.90 Gbit/s, below half a typical link (9.28 Gbit/s)"],
        ),
        (
            lambda r: r["ranks"][1]["resolved"].__setitem__("n3", "10.0.0.1"),
            ["the name n3 resolves differently on different hosts: 10.0.0.3 on n1, n3; 10.0.0.1 on n2"],
        ),
        (
            lambda r: r["ranks"][2].__setitem__("cpus", [4]),
            ["n3 has 1 CPU(s) for its 1 rank(s), fewer than the 2 asked (2 per rank)"],
        ),
        (
            lambda r: r["ranks"][1].update(node_gpus=4, cuda_visible_devices=""),
            ["rank 1 on n2 sees no GPU on a node with 4 (CUDA_VISIBLE_DEVICES='')"],
        ),
        (lambda r: r["ranks"][2].__setitem__("clock_offset_s", -0.25), ["n3's clock is -250 ms off n1's (rank 0)"]),
    ],
    ids=["clean", "slow-link", "name", "cpus", "gpu", "clock"],
)
def test_each_rule_names_its_hosts(change, expected):
    report = with_change(change)
    assert findings(report) == expected
    report["findings"] = expected
    text = render(report)
    assert "| n1 | - | 9.00 (0.10) |" in text and "| 2 | n3 | eth0 | 10.0.0.3 |" in text
    assert text.rstrip().endswith(expected[-1] if expected else "Findings: none")


def test_a_host_whose_every_link_is_slow_is_named_itself():
    def slow_n3(report):
        for i, j in ((0, 2), (1, 2), (2, 0), (2, 1)):
            report["links"][i][j] = link(0.1)

    found = findings(with_change(slow_n3))
    assert len([f for f in found if f.startswith("slow link")]) == 4
    assert found[-1] == "n3: every link to and from it is slow: check its interface, cable, switch port or shaping"


def doctor_on(bed, tmp_path, hosts=("node1", "node2", "node3")):
    """`mnist-dist doctor` on every host, as `run` starts across hosts; node1's exit code and output."""
    from test_multihost import on_hosts

    cmds = {
        host: [sys.executable, "-m", "launch", "doctor", "--hosts", ",".join(hosts), "--node-rank", str(k)]
        + [f"log.dir={tmp_path}", "log.run_name=doc", "dist.timeout=120"]
        for k, host in enumerate(hosts)
    }
    results = on_hosts(bed, tmp_path, cmds, timeout=300)
    for host in hosts[1:]:
        assert results[host][0] == 0, results[host][1][-3000:]
    return results["node1"], json.loads((tmp_path / "doc" / "doctor.json").read_text())


def test_a_clean_testbed_has_no_findings(three_hosts, tmp_path):
    (code, out), report = doctor_on(three_hosts, tmp_path)
    assert code == 0 and "Findings: none" in out, out[-3000:]
    assert report["nodes"] == ["node1", "node2", "node3"] and [r["interface"] for r in report["ranks"]] == ["eth0"] * 3
    assert all(report["links"][i][j]["gbit"] > 0.5 for i in range(3) for j in range(3) if i != j)
    for backend in ("gloo", "tensorflow (multi-worker)"):  # TensorFlow's part ran after torch's, merged
        assert [row["bytes"] for row in report["allreduce"][backend]] == [2**k for k in range(10, 23, 2)]
        assert all(row["busbw"] > 0 for row in report["allreduce"][backend])
    assert "| node1 | - |" in out  # the matrix, printed
    assert "WARNING:tensorflow" not in out, out[-3000:]  # TensorFlow's part says nothing of its own


def test_a_slow_link_and_a_wrong_name_are_found_and_named(three_hosts, tmp_path):
    three_hosts.shape("100mbit", only=("node3",))
    hosts_file = three_hosts.hosts_file("node2")
    wrong = three_hosts.host("node1").address
    lines = open(hosts_file).read().splitlines()
    open(hosts_file, "w").write(
        "\n".join(f"{wrong} node3" if line.endswith(" node3") else line for line in lines) + "\n"
    )
    (code, out), report = doctor_on(three_hosts, tmp_path)
    assert code == 1, out[-3000:]
    found = report["findings"]
    assert [f.split(":")[0] for f in found if f.startswith("slow link")] == [
        "slow link node1 -> node3",
        "slow link node2 -> node3",
        "slow link node3 -> node1",
        "slow link node3 -> node2",
    ], found
    right = three_hosts.host("node3").address
    assert f"the name node3 resolves differently on different hosts: {right} on node1, node3; {wrong} on node2" in found
    assert "node3: every link to and from it is slow: check its interface, cable, switch port or shaping" in found
    assert len(found) == 6 and all(f"- {f}" in out for f in found)
    assert "doctor: 6 finding(s)" in out
