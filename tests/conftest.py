import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import TEST_ID, Leftovers  # noqa: E402

# Tests that make testbed hosts (network namespaces, a bridge, a subnet) or Slurm daemons run one at
# a time in one test process: testbeds pick free subnets and clean up after killed runs by state
# file, which two at once would race on.
HOST_FIXTURES = {
    *("testbed", "testbed_session", "three_hosts", "testbeds_removed"),
    *("slurm_cluster", "slurm_two_nodes"),  # session clusters: one each, in one test process
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups from the markers
def pytest_collection_modifyitems(config, items):
    """The "hosts" group, first: it is the longest chain of tests that must run one after another."""
    hosts = [item for item in items if HOST_FIXTURES & set(getattr(item, "fixturenames", ()))]
    for item in hosts:
        item.add_marker(pytest.mark.xdist_group("hosts"))
    grouped = set(hosts)
    others = [item for item in items if item not in grouped]
    items[:] = hosts + others


def pytest_runtest_setup(item):
    """xdist schedules a group by the suffix it adds to the test's id: without it, host tests overlap."""
    loadgroup = getattr(item.config.option, "loadgroup", False)  # set on the workers of --dist loadgroup
    if loadgroup and item.get_closest_marker("xdist_group") and not item.nodeid.endswith("@hosts"):
        pytest.fail(
            f"pytest-xdist did not put this test in the hosts group (pytest {pytest.__version__}): "
            "install the pytest that .ci/cpu-constraints.txt names",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def leftovers(request, monkeypatch):
    """Exit hygiene, checked after every test: nothing the test started outlives it (ranks, launcher
    agents, daemons, watchdogs, Slurm job steps). Processes are known by an id in their environment,
    which survives new sessions and orphaning. One still ending as the test ends gets a few
    seconds; what stays is killed and fails the test."""
    test_id = f"{os.getpid()}-{next(_tests)}"
    monkeypatch.setenv(TEST_ID, test_id)
    left = Leftovers(test_id)
    yield left
    stayed = left.after(grace=10)
    if stayed:
        what = Leftovers.describe(stayed)
        left.kill()
        pytest.fail(f"{request.node.nodeid} left {len(stayed)} process(es) running: {what}", pytrace=False)


_tests = itertools.count()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty data cache: nothing leaks from ~/.cache or between tests."""
    monkeypatch.setenv("MNIST_DIST_DATA", str(tmp_path / "cache"))
    yield


@pytest.fixture
def venv_bin():
    return Path(sys.executable).parent


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(extra)
    return env


def _slurm(testbed=None, **options):
    """A real private Slurm cluster (munged + slurmctld + slurmd); always stopped."""
    from slurm_cluster import LocalSlurm, binaries_present

    if not binaries_present():
        pytest.skip(
            "SLURM BINARIES ABSENT: install slurm-wlm and munge (make test and .ci/run do) to run the sbatch tests"
        )
    # munged needs every folder above its socket to be traversable by all: pytest's are private
    root = Path(tempfile.mkdtemp(prefix="mnist-dist-slurm-"))
    cluster = LocalSlurm(root, testbed=testbed, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """One node, on this machine, for the session."""
    yield from _slurm()


@pytest.fixture
def slurm_binding():
    """One node with this machine's own CPUs, whose tasks Slurm binds to the CPUs they were given
    (task/affinity; the shared cluster declares more CPUs than the machine has and binds nothing).
    A cluster of its own, on private ports, numbering its jobs apart (their rendezvous ports derive
    from job ids): it runs beside the hosts group's, and beside another worker's."""
    yield from _slurm(cpus=os.cpu_count(), task_plugin="task/affinity", first_job=5000 + os.getpid() % 5000)


def _skip_without_testbed() -> None:
    from launch.testbed.hosts import missing_tools

    why = missing_tools()
    if why:
        pytest.skip(f"MULTI-HOST TESTBED UNAVAILABLE: {why}")


def _testbed(hosts: int):
    from launch.testbed.hosts import Testbed

    _skip_without_testbed()
    bed = Testbed.up(hosts)
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture(scope="session")
def testbed_session():
    yield from _testbed(2)


@pytest.fixture
def testbed(testbed_session):
    """Two hosts, node1 and node2 (launch/testbed/hosts.py). After each test every process on them is
    ended and their links are up and unshaped again, also when the test failed."""
    yield testbed_session
    for host in testbed_session.hosts:
        testbed_session.kill_host(host.name)
        testbed_session.link(host.name, up=True)
    testbed_session.shape(None)


@pytest.fixture
def three_hosts():
    """node1, node2 and node3, made for one test and removed after it."""
    yield from _testbed(3)


@pytest.fixture
def testbeds_removed():
    """For tests that make testbeds themselves (sweep --testbed, `mnist-dist testbed up`): whatever
    testbed they leave up, say when killed by the timeout, is removed."""
    from launch.testbed.hosts import STATE_DIR, load

    _skip_without_testbed()
    before = set(STATE_DIR.glob("*.json"))
    yield
    for state in set(STATE_DIR.glob("*.json")) - before:
        load(state.stem).down()


@pytest.fixture(scope="session")
def slurm_two_nodes():
    """Two nodes: slurmctld here, one slurmd on each host of a testbed of its own."""
    for bed in _testbed(2):
        yield from _slurm(bed)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB filesystem (tmpfs), smaller than one checkpoint; unmounted whatever the test did."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "tiny"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True, timeout=30)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True, timeout=30)
