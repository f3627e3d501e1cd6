"""What a run records of its environment (launch.cluster.environment) and `mnist-dist diff` of two runs: the
runs are real numpy-engine runs in this process (tests/numpy_engine.py), the diff the real command."""

import sys

import pytest

from launch.cluster.environment import REDACTED, launch_variables

from helpers import read_json, run
from numpy_engine import loop_config, register, run_ranks


@pytest.fixture(autouse=True)
def numpy_framework(monkeypatch):
    register(monkeypatch)


def test_launch_variables_keep_what_decides_the_run_and_redact_secrets():
    env = {
        "NCCL_SOCKET_IFNAME": "ib0",
        "NCCL_IB_PKEY": "0x8001",  # a partition key: not a secret, by name alone
        "GLOO_SOCKET_IFNAME": "eth0",
        "OMPI_MCA_btl": "^openib",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "MASTER_ADDR": "node1",
        "TF_CONFIG": '{"cluster": {}}',
        "SLURM_AUTH_TOKEN": "abc",  # a secret by name
        "NCCL_PROXY_URL": "http://user:hunter2@proxy:3128",  # a secret inside a URL
        "HOME": "/root",  # not a launch variable
        "AWS_SECRET_ACCESS_KEY": "xyz",
    }
    assert launch_variables(env) == {
        "GLOO_SOCKET_IFNAME": "eth0",
        "MASTER_ADDR": "node1",
        "NCCL_IB_PKEY": "0x8001",
        "NCCL_PROXY_URL": f"http://{REDACTED}@proxy:3128",
        "NCCL_SOCKET_IFNAME": "ib0",
        "OMPI_MCA_btl": "^openib",
        "SLURM_AUTH_TOKEN": REDACTED,
        "SLURM_JOB_NODELIST": "node[1-2]",
        "TF_CONFIG": '{"cluster": {}}',
    }


# name, value, what summary.json keeps (None: not kept at all)
SHARED = [
    ("NCCL_SOCKET_IFNAME", "ib0", "ib0"),
    ("NCCL_IB_PKEY", "0x8001", "0x8001"),  # a partition key, not a secret
    ("SLURM_JOB_NODELIST", "node[1-2]", "node[1-2]"),
    ("TF_CPP_MIN_LOG_LEVEL", "3", "3"),
    ("TF_CONFIG", '{"cluster": {"worker": ["node1:2222"]}}', '{"cluster": {"worker": ["node1:2222"]}}'),
    ("MASTER_ADDR", "node1", "node1"),
    ("GLOO_SOCKET_IFNAME", "eth0", "eth0"),
    ("SLURM_AUTH_TOKEN", "abc", REDACTED),
    ("SLURM_JWT", "eyJhbGciOi", REDACTED),
    ("NCCL_DB_PASSWORD", "pw", REDACTED),
    ("HOROVOD_DBPASSWORD", "pw", REDACTED),  # not a whole word
    ("NCCL_VAULT_SECRETS", "s", REDACTED),
    ("GLOO_PASSPHRASE", "p", REDACTED),
    ("MASTER_KEY", "k", REDACTED),
    ("NCCL_PROXY_URL", "http://user:hunter2@proxy:3128", f"http://{REDACTED}@proxy:3128"),
    ("NCCL_REMOTE", "user:hunter2@host:22", f"{REDACTED}@host:22"),  # no scheme
    ("NCCL_PLUGIN_URL", "https://host/p?token=abc&sig=x", f"https://host/p?token={REDACTED}&sig={REDACTED}"),
    ("TF_VAR_dbpassword", "pw", None),  # Terraform's
    ("TF_TOKEN_app_terraform_io", "t", None),
    ("TF_LOG", "DEBUG", None),
    ("SLURM_JOB_USER", "alice", None),
    ("SLURM_JOB_UID", "1000", None),
    ("SLURM_JOB_ACCOUNT", "physics", None),
    ("SLURM_SUBMIT_DIR", "/home/alice/secret-project", None),
    ("HOME", "/root", None),
    ("AWS_SECRET_ACCESS_KEY", "xyz", None),
]


@pytest.mark.parametrize(("name", "value", "kept"), SHARED, ids=[row[0] for row in SHARED])
def test_what_a_summary_shares_of_each_variable(name, value, kept):
    assert launch_variables({name: value}).get(name) == kept


def test_diff_prints_stored_text_with_its_control_characters_escaped():
    from launch.experiments.diff import _aligned

    shown = _aligned(["A: run\x1b]0;pwned\x07", ("  NCCL_X", "a\x1b[2J", "b\x9b", "")])
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "run\\x1b]0;pwned\\x07" in shown and "a\\x1b[2J" in shown


def test_diff_of_two_runs_names_what_differs_and_compares_their_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth0")
    assert run_ranks(loop_config(tmp_path, "log.run_name=a"), 2) == [0, 0]
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "ib0")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "ib0")
    assert run_ranks(loop_config(tmp_path, "log.run_name=b", "train.batch_size=64"), 1) == [0]
    a, b = read_json(tmp_path / "a" / "summary.json"), read_json(tmp_path / "b" / "summary.json")
    assert a["environment"]["variables"]["NCCL_SOCKET_IFNAME"] == "eth0" and a["environment"]["cpu"]
    assert [r["interface"] for r in a["ranks"]] == ["lo", "lo"]  # towards the master, 127.0.0.1

    out = run(
        [sys.executable, "-m", "launch", "diff", str(tmp_path / "a"), str(tmp_path / "b" / "summary.json")],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    rate = next(line for line in lines if line.startswith("images/s "))
    assert rate.split()[-1] == f"{b['images_per_sec'] / a['images_per_sec']:.3f}"
    assert any(line.split() == ["train.batch_size", "32", "64"] for line in lines), out.stdout
    assert any(line.split() == ["world_size", "2", "1"] for line in lines), out.stdout
    assert any(line.split() == ["NCCL_SOCKET_IFNAME", "eth0", "ib0"] for line in lines), out.stdout
    assert any(line.split() == ["GLOO_SOCKET_IFNAME", "(unset)", "ib0"] for line in lines), out.stdout
    assert "versions: the same" in lines and "hosts: 1 differ" in lines  # rank 1 ran only in A
    assert not any(line.split()[:1] == ["data.dataset"] for line in lines)  # the same in both: not listed


def test_diff_of_something_that_is_not_a_run_says_so(tmp_path):
    out = run([sys.executable, "-m", "launch", "diff", str(tmp_path), str(tmp_path)], cwd=tmp_path)
    assert out.returncode == 1 and "no summary.json there: give a run directory" in out.stderr


def test_diff_names_the_launcher_hides_launcher_wiring_unless_asked_and_aligns_its_columns(tmp_path):
    import dataclasses

    from launch.experiments.diff import Run, render
    from launch.outputs.summary import read_summary

    assert run_ranks(loop_config(tmp_path, "log.run_name=a"), 1) == [0]
    summary = read_summary(tmp_path / "a" / "summary.json")
    assert summary.launcher  # recorded by every run from now on
    mpi = {"OMPI_MCA_btl": "^openib", "OMPI_MCA_orte_hnp_uri": "1234.0;tcp://10.0.0.1:41000", "MASTER_PORT": "29500"}
    mpi["OMPI_MCA_ess_base_jobid"] = "77"
    torchrun = {"MASTER_PORT": "41999", "TORCHELASTIC_RUN_ID": "a-very-long-run-identifier-of-torchrun"}
    a = Run("a", dataclasses.replace(summary, launcher="openmpi", environment={"variables": mpi}), {})
    b = Run("b", dataclasses.replace(summary, launcher="torchrun", environment={"variables": torchrun}), {})
    lines = render(a, b).splitlines()
    assert any(line.split() == ["launcher", "openmpi", "torchrun"] for line in lines)
    assert any(line.split() == ["OMPI_MCA_btl", "^openib", "(unset)"] for line in lines)
    assert not any("orte_hnp_uri" in line or "MASTER_PORT" in line or "RUN_ID" in line for line in lines)
    assert "  and 4 launcher wiring variable(s) that differ, as in any two runs (--all shows them)" in lines
    assert lines.index("environment: 1 differ") > lines.index("versions: the same")  # the environment last
    everything = render(a, b, wiring=True).splitlines()
    assert any(line.split()[:1] == ["OMPI_MCA_orte_hnp_uri"] for line in everything)
    # one column for A's values in every section, however long a name: right edges meet
    ends = {line.index("openmpi") + len("openmpi") for line in everything if line.startswith("  launcher")}
    assert ends == {line.index("^openib") + len("^openib") for line in everything if "OMPI_MCA_btl" in line}
