"""The ``tinygrad-bn`` command end to end, run as a subprocess in a temporary folder, and the
demo's claim (a learning rate where only the BatchNorm model trains well)."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tinygrad_bn
from tinygrad_bn import checkpoint, cli, data, demo
from tinygrad_bn.models import mlp
from tinygrad_bn.train import accuracy

_SCRIPT = Path(sys.executable).parent / "tinygrad-bn"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tinygrad_bn.cli"]


def run(args, cwd, timeout=120):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    return subprocess.run(COMMAND + list(args), cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_version(tmp_path):
    r = run(["--version"], tmp_path)
    assert r.returncode == 0
    assert r.stdout.strip() == f"tinygrad-bn {tinygrad_bn.__version__}"


def test_no_command_prints_help(tmp_path):
    r = run([], tmp_path)
    assert r.returncode == 0
    assert "usage: tinygrad-bn" in r.stdout and "train" in r.stdout


def _subcommands():
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


def test_the_expected_subcommands_exist():
    assert {"demo", "train", "gradcheck", "graph"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(tmp_path, command):
    r = run([command, "--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: tinygrad-bn {command}")
    assert "--" in r.stdout and r.stderr == ""
    assert os.listdir(tmp_path) == []  # help writes nothing


def test_gradcheck_prints_the_table(tmp_path):
    r = run(["gradcheck"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    rows = [ln for ln in lines if ln.rstrip().endswith(" ok")]
    assert len(rows) >= 20
    assert any(ln.startswith("matmul") for ln in rows)
    assert any(ln.startswith("exp") for ln in rows)
    assert "FAIL" not in r.stdout
    assert any("primitives pass" in ln for ln in lines)
    assert os.listdir(tmp_path) == []


def test_train_writes_a_checkpoint_history_and_curves(tmp_path):
    out = tmp_path / "run"
    r = run(["train", "--dataset", "moons", "--norm", "batch", "--epochs", "2",
             "--out", str(out), "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(os.listdir(out)) == ["curves.png", "history.json", "model.npz"]
    assert "wrote" in r.stdout and "test accuracy" in r.stdout
    assert r.stderr == ""  # --no-progress: no bar

    hist = json.loads((out / "history.json").read_text())
    assert hist["dataset"] == "moons" and hist["norm"] == "batch" and hist["epochs"] == 2
    assert hist["diverged_at"] is None
    assert hist["steps"] == len(hist["step_loss"]) > 0
    assert hist["eval_step"][-1] == hist["steps"] and len(hist["test_acc"]) == 2
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the checkpoint loads into the same MLP and reproduces the reported accuracy
    model = mlp(2, tuple(hist["hidden"]), 2, norm="batch", rng=99)
    model.load_state_dict(checkpoint.load(out / "model.npz"))
    ds = data.load("moons", seed=0)
    acc = accuracy(model, ds.X_test, ds.y_test)
    assert acc == pytest.approx(hist["test_accuracy"], abs=1e-12)
    assert acc > 0.85
    assert int(model[1].num_batches_tracked.data) == hist["steps"]


def test_train_reports_divergence_and_exits_1(tmp_path):
    out = tmp_path / "div"
    r = run(["train", "--norm", "none", "--lr", "1e6", "--epochs", "2", "--hidden", "8",
             "--out", str(out), "--no-progress"], tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "lower learning rate" in r.stdout
    hist = json.loads((out / "history.json").read_text())
    assert hist["diverged_at"] == hist["steps"] >= 1
    assert f"step {hist['diverged_at']}" in r.stdout


def test_demo_writes_its_pictures(tmp_path, dot_binary):
    out = tmp_path / "demo_out"
    r = run(["demo", "--out", str(out), "--no-progress", "--epochs", "3"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    files = set(os.listdir(out))
    assert {"batchnorm_graph.svg", "loss_curves.png", "decision_boundaries.png"} <= files
    svg = (out / "batchnorm_graph.svg").read_text()
    assert "<svg" in svg and "</svg>" in svg
    for name in ("mean", "sqrt"):  # op nodes of the composed BatchNorm
        assert name in svg
    for png in ("loss_curves.png", "decision_boundaries.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no norm" in r.stdout and "BatchNorm" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("args,what", [
    (["train", "--dataset", "mnist"], "--dataset"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "abc"], "--lr"),
    (["train", "--hidden", "0"], "--hidden"),
    (["train", "--hidden", "64,-2"], "--hidden"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--norm", "weird"], "--norm"),
    (["demo", "--epochs", "0"], "--epochs"),
    (["frobnicate"], "frobnicate"),
    (["graph", "--mlp", "--norm", "instance", "--out", "g.svg"], "instance"),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, args, what):
    r = run(args, tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("tinygrad-bn") and "error" in lines[0] and what in lines[0]
    assert r.stdout == ""


# -- the demo's claim --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_demo_learning_rate_trains_only_the_batchnorm_model(seed):
    ds, models, histories = demo.train_pair(seed=seed, progress=False)
    assert set(histories) == {"no norm", "BatchNorm"}
    bn, plain = histories["BatchNorm"], histories["no norm"]
    assert bn.steps == plain.steps == demo.DEMO["epochs"] * (len(ds.y_train)
                                                            // demo.DEMO["batch_size"])
    assert bn.diverged_at is None
    assert accuracy(models["BatchNorm"], ds.X_test, ds.y_test) == pytest.approx(
        bn.final_test_acc)
    assert bn.final_test_acc > 0.9, f"BatchNorm model: {bn.final_test_acc:.3f}"
    assert plain.diverged_at is not None or plain.final_test_acc < 0.7, (
        f"seed {seed}: the model without BatchNorm reaches {plain.final_test_acc:.3f}")


def test_compare_paths_prints_the_three_terms_and_their_sum():
    from tinygrad_bn.cli import main

    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["compare", "--paths"])
    out = buf.getvalue()
    assert rc == 0
    for part in ("μ", "σ²", "x̂", "other"):
        assert f"  {part}" in out
    assert "dσ² · 2(x - μ) / m" in out and "max |difference|" in out


def test_python_dash_m_is_the_same_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "tinygrad_bn", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("tinygrad-bn ")
