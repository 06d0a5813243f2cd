"""The command line never loses work: every command checks its output path and its optional
packages before it starts, refuses options that do not apply, shows its defaults, and a
Ctrl-C during ``train`` saves what was learnt."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinygrad_bn import checkpoint
from tinygrad_bn.app import cli, demo

from test_cli import run


def _one_line_error(r, *needles):
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _blocked(modules: list, argv: list, cwd):
    """Run the CLI in a subprocess in which importing ``modules`` fails (as if missing)."""
    code = ("import sys\n"
            f"for m in {modules!r}:\n    sys.modules[m] = None\n"
            "from tinygrad_bn.app.cli import main\n"
            f"sys.exit(main({argv!r}))\n")
    env = dict(os.environ, MPLBACKEND="Agg")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120)
    return r, time.perf_counter() - t0


# ------------------------------------------------------------- output paths, first
def test_train_refuses_a_file_as_its_folder_before_training(tmp_path):
    (tmp_path / "taken").write_text("mine")
    r = run(["train", "--out", "taken", "--epochs", "50", "--no-progress"], tmp_path)
    _one_line_error(r, "--out taken", "is a file, not a folder")
    assert r.stdout == ""  # nothing was trained or printed
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("command", [
    ["train", "--epochs", "1"], ["experiment", "learning_rate", "--quick"], ["demo", "--epochs", "1"],
])
def test_commands_refuse_an_unusable_folder_before_working(tmp_path, command):
    (tmp_path / "afile").write_text("x")
    r = run([*command, "--out", "afile/sub", "--no-progress"], tmp_path)
    _one_line_error(r, "--out afile/sub", "cannot create the folder")
    assert r.stdout == ""


def test_a_folder_that_cannot_be_written_is_refused_before_training(tmp_path):
    """/proc refuses new folders even to root (chmod would not stop root)."""
    r = run(["train", "--epochs", "50", "--out", "/proc/tinygrad_bn_out", "--no-progress"],
            tmp_path)
    _one_line_error(r, "--out /proc/tinygrad_bn_out", "cannot create the folder")
    assert r.stdout == ""


def test_graph_creates_folders_like_every_command(tmp_path):
    r = run(["graph", "--out", "a/new/dir/g.dot"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a/new/dir/g.dot").read_text().startswith("digraph")


def test_graph_format_and_suffix_must_agree(tmp_path, dot_binary):
    r = run(["graph", "--format", "png", "--out", "x.svg"], tmp_path)
    _one_line_error(r, "--format png", "x.svg", "x.png")
    assert not (tmp_path / "x.svg").exists()
    r = run(["graph", "--format", "png", "--out", "noext"], tmp_path)
    assert r.returncode == 0 and (tmp_path / "noext.png").read_bytes()[:4] == b"\x89PNG"
    r = run(["graph", "--format", "dot", "--out", "g.dot"], tmp_path)
    assert r.returncode == 0
    r = run(["graph", "--steps", "--format", "svg", "--out", "p.html"], tmp_path)
    _one_line_error(r, "--format does not apply with --steps")


def test_graph_without_dot_says_what_to_install_and_exits_2(tmp_path):
    env_path = os.path.dirname(sys.executable)  # the venv's bin: python, but no dot
    r = subprocess.run([sys.executable, "-m", "tinygrad_bn", "graph", "--out", "g.svg"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PATH=env_path))
    _one_line_error(r, "Graphviz", "apt-get install graphviz", "--out FILE.dot")
    assert "format=" not in r.stderr  # the CLI's words, not the Python API's
    assert not (tmp_path / "g.svg").exists()


# ------------------------------------------------------ optional packages, first
def test_experiment_without_matplotlib_stops_at_once(tmp_path):
    r, seconds = _blocked(["matplotlib", "matplotlib.pyplot"],
                          ["experiment", "learning_rate", "--out", "o", "--no-progress"], tmp_path)
    _one_line_error(r, "needs matplotlib", "pip install 'tinygrad-bn[plots]'")
    assert not (tmp_path / "o").exists() and seconds < 30


def test_digits_without_scikit_learn_stops_at_once(tmp_path):
    r, _ = _blocked(["sklearn", "sklearn.datasets"],
                    ["train", "--dataset", "digits", "--out", "o", "--no-progress"], tmp_path)
    _one_line_error(r, "--dataset digits needs sklearn", "tinygrad-bn[digits]")
    assert not (tmp_path / "o").exists()


def test_train_without_matplotlib_still_saves_the_model(tmp_path):
    r, _ = _blocked(["matplotlib", "matplotlib.pyplot"],
                    ["train", "--epochs", "1", "--hidden", "8", "--out", "o", "--no-progress"],
                    tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no curves.png" in r.stdout and "tinygrad-bn[plots]" in r.stdout
    assert {"model.npz", "history.json"} <= set(os.listdir(tmp_path / "o"))


# ------------------------------------------------------------ options and defaults
def test_help_shows_the_defaults(tmp_path):
    r = run(["train", "--help"], tmp_path)
    text = " ".join(r.stdout.split())
    for shown in ("(default: moons)", "(default: batch)", "(default: 20)", "(default: 32)",
                  "(default: 64,64)", "0.001 for adam"):
        assert shown in text, shown
    assert "(default: None)" not in text and "(default: False)" not in text
    r = run(["graph", "--help"], tmp_path)
    assert "(default: LR)" in " ".join(r.stdout.split())


def test_adam_gets_torchs_learning_rate_and_refuses_momentum(tmp_path):
    r = run(["train", "--optimizer", "adam", "--epochs", "1", "--hidden", "8", "--out", "o",
             "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Adam lr=0.001" in r.stdout
    assert json.loads((tmp_path / "o" / "history.json").read_text())["lr"] == 0.001
    r = run(["train", "--optimizer", "adamw", "--momentum", "0.5"], tmp_path)
    _one_line_error(r, "--momentum applies to --optimizer sgd only")


def test_train_and_demo_report_the_same_smoothed_loss(tmp_path):
    r = run(["train", "--epochs", "2", "--hidden", "8", "--out", "o", "--no-progress"],
            tmp_path)
    assert r.returncode == 0, r.stderr
    hist = json.loads((tmp_path / "o" / "history.json").read_text())
    want = float(np.mean(hist["step_loss"][-demo.SMOOTHING:]))
    assert f"final loss {want:.4f} (mean of the last {demo.SMOOTHING} steps)" in r.stdout
    assert hist["final_loss"] == pytest.approx(want)

    class H:
        step_loss = hist["step_loss"]
        diverged_at = None
        test_acc = [0.5]
        final_test_acc = 0.5
        steps = len(hist["step_loss"])

        def steps_to(self, target):
            return None
    table = demo.results_table({"a": H()})
    assert f"last {demo.SMOOTHING} steps" in table and demo._fmt(want) in table


def test_out_folder_and_out_file_helpers(tmp_path):
    assert cli.out_folder(str(tmp_path / "x" / "y")).is_dir()
    with pytest.raises(cli.CommandError, match="is a folder"):
        cli.out_file(str(tmp_path / "x"))
    assert cli.out_file(str(tmp_path / "z" / "g.svg")).parent.is_dir()
    assert os.listdir(tmp_path / "x" / "y") == []  # the write probe leaves nothing


# --------------------------------------------------------------- Ctrl-C in train
def test_ctrl_c_in_train_saves_the_model_and_says_where(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "tinygrad_bn", "train", "--epochs", "400",
                          "--hidden", "16", "--out", "o", "--no-progress"], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.time() + 60
        while "SGD lr=" not in line and time.time() < deadline:  # training starts next
            line = p.stdout.readline()
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted after" in err and str(tmp_path / "o" / "model.npz") in err.replace(
        "o/model.npz", str(tmp_path / "o" / "model.npz"))
    state = checkpoint.load(tmp_path / "o" / "model.npz")
    assert all(np.isfinite(v).all() for v in state.values())
    hist = json.loads((tmp_path / "o" / "history.json").read_text())
    assert 0 < hist["steps"] < 400 * 30
