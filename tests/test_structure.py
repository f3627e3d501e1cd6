"""The code's shape, as the project promises it: rooms (launch's sub-packages) that import each other
only downwards, one-way imports between modules, small folders, modules, classes and functions,
packages whose import changes nothing outside Python, and timings that count from the process's start."""

import ast
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT

PACKAGES = ("launch", "torch_dist", "tf_dist")
MAX_LINES, MAX_PARAMETERS = 60, 8
MAX_CLASS_LINES, MAX_MODULE_LINES, MAX_MODULES_PER_FOLDER = 200, 400, 12

# Which rooms each room may import. The shared base (launch's top-level modules) imports no room;
# the trainers sit on the per-rank runtime and never on the launch side (jobs, experiments, cli).
BASE, TRAINER_ROOMS = "launch", {"launch", "launch.cluster", "launch.data", "launch.outputs", "launch.run"}
ALLOWED = {
    BASE: set(),
    "launch.cluster": {BASE},
    "launch.data": {BASE},
    "launch.testbed": {BASE},
    "launch.forecast": {BASE, "launch.outputs"},
    "launch.outputs": {BASE, "launch.cluster"},
    "launch.run": {BASE, "launch.cluster", "launch.data", "launch.outputs"},
    "launch.jobs": {BASE, "launch.cluster", "launch.outputs"},
    "launch.doctor": {BASE, "launch.cluster", "launch.jobs"},
    "launch.experiments": {
        BASE,
        "launch.cluster",
        "launch.outputs",
        "launch.jobs",
        "launch.testbed",
        "launch.forecast",
    },
    "launch.cli": {BASE, "launch.cluster", "launch.data", "launch.outputs", "launch.run", "launch.jobs"}
    | {"launch.doctor", "launch.experiments", "launch.testbed", "launch.forecast"},
    "torch_dist": TRAINER_ROOMS | {"launch.doctor"},
    "tf_dist": TRAINER_ROOMS | {"launch.doctor"},
}


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    paths = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in paths}


def room(module: str) -> str:
    """The sub-package a module lives in: launch.run.loop -> launch.run; launch.config -> launch (the
    base); `python -m launch` is the CLI's."""
    if module == "launch.__main__":
        return "launch.cli"
    parts = module.split(".")
    if parts[0] != "launch":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 and (ROOT / "launch" / parts[1]).is_dir() else BASE


def wrong_directions(graph: dict[str, set[str]], allowed: dict[str, set[str]]) -> list[str]:
    """`a -> b (rooms A -> B)` for every import from one room into another that `allowed` does not list."""
    return [
        f"{a} -> {b} ({room(a)} -> {room(b)})"
        for a in sorted(graph)
        for b in sorted(graph[a])
        if room(a) != room(b) and room(b) not in allowed[room(a)]
    ]


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The project modules `name` imports, at any depth of its code (a function's import counts too)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
            out |= {node.module} & known
    return out - {name, name.split(".")[0]}  # a package's own __init__ is no edge


def test_the_rooms_import_each_other_only_the_allowed_ways():
    trees = modules()
    graph = {name: imports(name, tree, set(trees)) for name, tree in trees.items()}
    assert {room(name) for name in graph} == set(ALLOWED)  # a new room gets its row here
    assert wrong_directions(graph, ALLOWED) == []


def test_an_import_against_the_direction_is_named():
    graph = {"launch.cluster.world": {"launch.run.loop", "launch.errors"}, "launch.run.loop": {"launch.cluster.world"}}
    assert wrong_directions(graph, ALLOWED) == [
        "launch.cluster.world -> launch.run.loop (launch.cluster -> launch.run)"
    ]


def test_folders_modules_and_classes_stay_small():
    """Outside benchmarks/ and tests/: a folder a reader takes in at a glance, modules and classes
    that each own one thing."""
    paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    too_big = []
    for folder in sorted({p.parent for p in paths}):
        if len(list(folder.glob("*.py"))) > MAX_MODULES_PER_FOLDER:
            too_big.append(f"folder {folder.relative_to(ROOT)}: {len(list(folder.glob('*.py')))} modules")
    for path in sorted(paths):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_big.append(f"module {module_name(path)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_big.append(f"class {module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, too_big


def test_no_two_modules_import_each_other_directly_or_around_a_loop():
    trees = modules()
    graph = {name: imports(name, tree, set(trees)) for name, tree in trees.items()}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


# What turns bytes from a peer into code: torch's *_object collectives pickle (docs/security.md)
UNPICKLING = {"all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list"}
UNPICKLING |= {"send_object_list", "recv_object_list", "pickle", "dill", "cloudpickle"}


def test_nothing_a_peer_sends_is_unpickled():
    found = [
        f"{name}: {node.attr if isinstance(node, ast.Attribute) else node.names[0].name}"
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if (isinstance(node, ast.Attribute) and node.attr in UNPICKLING)
        or (isinstance(node, ast.Import | ast.ImportFrom) and {a.name for a in node.names} & UNPICKLING)
    ]
    assert not found, found


def test_functions_are_short_and_take_few_parameters():
    """Everywhere outside benchmarks/: the packages, the tests and setup.py."""
    files = [ROOT / "setup.py", *sorted((ROOT / "tests").glob("*.py"))]
    trees = {**modules(), **{path.name: ast.parse(path.read_text(), str(path)) for path in files}}
    too_big = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
                count = len([p for p in params if p.arg not in ("self", "cls")])
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES or count > MAX_PARAMETERS:
                    too_big.append(f"{name}.{node.name}: {lines} lines, {count} parameters")
    assert not too_big, too_big


def test_importing_the_packages_leaves_file_descriptors_and_environment_alone():
    code = (
        "import os, sys; before = (sorted(os.listdir('/proc/self/fd')), dict(os.environ)); "
        "import launch, torch_dist, tf_dist; "
        "after = (sorted(os.listdir('/proc/self/fd')), dict(os.environ)); "
        "print(before == after, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(maxsplit=1) == ["True", "[]\n"]


def test_a_trainer_s_times_count_from_the_process_start_whatever_it_imports(tmp_path):
    """launch.clock reads when the kernel started the process: an import before it is counted."""
    code = "import time; time.sleep(1.0); from launch.clock import process_start; print(process_start())"
    before = __import__("time").time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert abs(float(out.stdout) - before) < 0.5  # not a second later, where the module was imported


@pytest.mark.parametrize("module", ["torch_dist.train", "tf_dist.train"])
def test_a_trainer_s_wall_time_is_its_process_s_timed_from_outside(tmp_path, module):
    """wall_time_s runs from the process's start to its summary: held against the same span timed
    from outside (the launch to the summary file's write), it misses no import. Counted from an
    import-time clock, TensorFlow's run missed the 2.7 s its package import takes, over half."""
    cmd = [sys.executable, "-m", module, "--config", str(ROOT / "configs/mlp.yaml"), f"log.dir={tmp_path}"]
    cmd += ["log.run_name=r", "log.progress=never", "data.dataset=synthetic", "data.limit=2000", "train.epochs=1"]
    launched = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = tmp_path / "r" / "summary.json"
    outside, inside = summary.stat().st_mtime - launched, json.loads(summary.read_text())["wall_time_s"]
    assert -0.05 < outside - inside < 0.2 * outside, (outside, inside)  # fork, exec and the write: milliseconds


def test_the_python_floor_setup_py_promises_parses_every_module():
    """setup.py once accepted 3.9, where `str | None` in a dataclass fails at import: the floor it
    states is the one the code's syntax is checked against (the annotations are evaluated at run time)."""
    floor = re.search(r'python_requires=">=3\.(\d+)"', (ROOT / "setup.py").read_text())
    assert floor and int(floor[1]) >= 10
    for path in [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]:
        ast.parse(path.read_text(), feature_version=(3, int(floor[1])))


CITED = re.compile(r"`((?:launch|torch_dist|tf_dist)/[\w/]+\.py):([\w.]+)`")


def defined_names(path) -> set[str]:
    """Every function and class in a module, and every method as Class.method."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{n.name}" for n in node.body if isinstance(n, ast.FunctionDef)}
    return names


def test_the_step_walks_in_docs_cite_only_what_exists():
    """docs/trainers.md follows one DDP step and one TensorFlow step through the code by file and
    function: a rename or a move that the walk does not follow fails here."""
    text = (ROOT / "docs" / "trainers.md").read_text()
    cited = CITED.findall(text)
    assert len(cited) >= 30, "the walks cite the code as `file.py:function`"
    missing = [f"{file}:{name}" for file, name in cited if not (ROOT / file).is_file()]
    missing += [f"{f}:{n}" for f, n in cited if (ROOT / f).is_file() and n not in defined_names(ROOT / f)]
    assert missing == []
