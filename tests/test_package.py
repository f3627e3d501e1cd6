"""The package's shell: imports stay light, both entry points answer --help."""

import subprocess
import sys

from conftest import ROOT


def run(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, **kw)


def test_import_launch_leaves_frameworks_unimported():
    code = (
        "import sys, launch, launch.cli.main, launch.config, launch.data.datasets, launch.cluster.world, launch.data.shard, "
        "launch.outputs.summary, launch.outputs.rundir; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras')))"
    )
    out = run(sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_python_m_launch_help():
    out = run(sys.executable, "-m", "launch", "--help")
    assert out.returncode == 0
    assert "data" in out.stdout and "config" in out.stdout


def test_console_script_help(venv_bin):
    out = run(str(venv_bin / "mnist-dist"), "--help")
    assert out.returncode == 0
    assert out.stdout.startswith("usage: mnist-dist")
