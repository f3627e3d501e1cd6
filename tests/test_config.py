"""Config: YAML + dotted overrides, and every bad input refused with one line and exit code 2."""

import pytest
import yaml

from launch.config import load_config, write_config
from launch.errors import ConfigError

from conftest import ROOT
from helpers import cli


def mnist_dist(*args, cwd=ROOT):
    return cli(*args, cwd=cwd)


def test_shipped_configs_load():
    mlp = load_config(ROOT / "configs/mlp.yaml")
    assert (mlp.model.name, mlp.train.epochs, mlp.train.optimizer, mlp.train.lr) == ("mlp", 5, "adam", 1e-3)
    assert load_config(ROOT / "configs/cnn.yaml").model.name == "cnn"


def test_overrides_are_typed_and_win_over_the_file():
    cfg = load_config(
        ROOT / "configs/mlp.yaml",
        [
            "train.epochs=3",
            "train.lr=0.01",
            "data.dir=/x",
            "train.shuffle=false",
            "log.run_name=2024",
            "data.limit=null",
        ],
    )
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.data.dir == "/x"
    assert cfg.train.shuffle is False and cfg.log.run_name == "2024" and cfg.data.limit is None


def test_integer_lr_is_a_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


def test_exponent_without_a_dot_is_a_number():
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001  # YAML 1.1 would read a string


@pytest.mark.parametrize("rule,world,expected", [("none", 4, 0.1), ("linear", 4, 0.4), ("sqrt", 4, 0.2)])
def test_lr_scaling(rule, world, expected):
    cfg = load_config(None, ["train.lr=0.1", f"train.lr_scaling={rule}"])
    assert cfg.scaled_lr(world) == pytest.approx(expected)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs/cnn.yaml", ["train.epochs=2"])
    write_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


BAD_OVERRIDES = [
    ("train.epocs=3", "unknown config key train.epocs; did you mean train.epochs?"),
    ("trian.epochs=3", "unknown config key trian; did you mean train?"),
    ("train.batch_size=0", "train.batch_size must be positive, got 0"),
    ("train.epochs=-1", "train.epochs must be positive, got -1"),
    ("train.lr=0", "train.lr must be positive, got 0.0"),
    ("train.lr=.nan", "train.lr must be positive, got nan"),
    ("train.lr=fast", "train.lr must be a number, got 'fast'"),
    ("train.batch_size=1.5", "train.batch_size must be an integer, got 1.5"),
    ("train.epochs=true", "train.epochs must be an integer, got True"),
    ("train.shuffle=3", "train.shuffle must be true or false, got 3"),
    ("train.epochs=null", "train.epochs must be set (it cannot be null)"),
    ("model.name=resnet", "model.name must be one of mlp, cnn; got 'resnet'"),
    (
        "data.dataset=mnsit",
        "data.dataset must be one of mnist, fashion-mnist, synthetic; got 'mnsit' (did you mean mnist?)",
    ),
    ("train=3", "train must be a mapping, got int 3"),
    ("log.progress=off", "log.progress must be one of auto, always, never; got False"),
    ("trainepochs", "override 'trainepochs' is not of the form section.key=value"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES)
def test_bad_override_is_one_line_and_exit_2(override, message):
    out = mnist_dist("config", "--config", "configs/mlp.yaml", override)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnist-dist: error: ")
    assert message in lines[0]


@pytest.mark.parametrize(
    "content,message",
    [
        ("- a\n- b\n", "must be a mapping of sections"),
        ("train: {epochs: [1\n", "is not valid YAML at line"),
        ("train:\n  epochs: 3\n  batch: 64\n", "unknown config key train.batch; did you mean train.batch_size?"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "is not valid YAML"),
    ],
)
def test_bad_file_is_one_line_and_exit_2(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    out = mnist_dist("config", "--config", str(path))
    assert out.returncode == 2, out.stderr
    assert "pwned" not in out.stdout
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr


def test_missing_file_exit_2(tmp_path):
    out = mnist_dist("config", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "not found: check the --config path" in out.stderr


def test_config_command_prints_resolved_yaml():
    out = mnist_dist("config", "--config", "configs/mlp.yaml", "train.epochs=7")
    assert out.returncode == 0
    assert yaml.safe_load(out.stdout)["train"]["epochs"] == 7


def test_empty_file_means_defaults(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == load_config(None)


def test_error_class_is_config_error():
    with pytest.raises(ConfigError):
        load_config(None, ["dist.backend=mpi"])


def test_config_command_checks_what_a_framework_can_run():
    refused = mnist_dist("config", "--framework", "tf", "--nproc", "2", "dist.compression=fp16")
    assert refused.returncode == 2 and "tf.distribute has no gradient compression" in refused.stderr
    assert refused.stdout == ""
    assert mnist_dist("config", "--framework", "torch", "--nproc", "2", "dist.compression=fp16").returncode == 0
