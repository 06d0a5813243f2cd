"""The study framework (tinygrad_bn.studies.framework) with a tiny fake study: the loop over
arms × settings × seeds, configs, verdicts from data, strict JSON, snapshots, the training
loop, progress bars."""
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from tinygrad_bn import Tensor, nn, optim, studies
from tinygrad_bn.studies import framework as fw
from tinygrad_bn.training import data


# -- a fake study: "more is better" over a setting, two arms, seeds -------------------------
@dataclass(kw_only=True)
class FakeResult(fw.Result):
    scale: list
    seeds: list
    score: dict
    note: dict


CALLS = []


def fake_measure(arm, scale, seed):
    CALLS.append((arm, scale, seed))
    return {"score": (2.0 if arm == "big" else 1.0) * scale + 0.01 * seed,
            "note": [arm, seed]}


def fake_experiment(cfg, seed, progress):
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    runs = fw.sweep(("small", "big"), fake_measure, settings=cfg["scale"], seeds=seeds,
                    progress=progress)
    return FakeResult(config=cfg, seed=seed, scale=list(cfg["scale"]), seeds=seeds, **runs)


def fake_table(result):
    return "\n".join(f"{arm}: {np.mean(v):.2f}" for arm, v in result.score.items())


def fake_verdict(result):
    big, small = np.mean(result.score["big"]), np.mean(result.score["small"])
    if math.isnan(big):
        return fw.Verdict(None, "no data")
    return fw.Verdict(bool(big > small), f"big {big:.2f} against small {small:.2f}")


def fake_plot(result, path=None):
    if path:
        with open(path, "wb") as f:
            f.write(b"not really a png")
    return "figure"


FAKE = fw.Study("fake", "Bigger is better", dict(scale=(1.0, 2.0), n_seeds=1),
                dict(scale=(1.0, 2.0, 3.0), n_seeds=2), fake_experiment, fake_table,
                fake_verdict, fake_plot)


# -- sweep -----------------------------------------------------------------------------------
def test_sweep_runs_every_arm_setting_and_seed_and_stacks_the_values():
    CALLS.clear()
    out = fw.sweep(("a", "b"), fake_measure, settings=[1.0, 2.0, 3.0], seeds=[0, 1],
                   progress=False)
    assert CALLS == [(arm, s, seed) for arm in ("a", "b") for s in (1.0, 2.0, 3.0)
                     for seed in (0, 1)]
    assert set(out) == {"score", "note"} and set(out["score"]) == {"a", "b"}
    score = out["score"]["a"]
    assert score.shape == (3, 2)  # (settings, seeds)
    assert score[2, 1] == pytest.approx(3.01)
    assert out["note"]["b"].shape == (3, 2, 2)  # the measured value's own axes follow


def test_sweep_axes_only_for_what_is_swept():
    seeds_only = fw.sweep(("a",), fake_measure_no_setting, seeds=[5, 6], progress=False)
    assert seeds_only["score"]["a"].shape == (2,)
    single = fw.sweep(("a", "b"), fake_measure_no_setting, seeds=7, progress=False)
    assert single["score"] == {"a": 7.0, "b": 7.0}  # one run: passed on as measured
    assert single["note"]["b"] == {"seed": 7}


def fake_measure_no_setting(arm, setting, seed):
    assert setting is None
    return {"score": float(seed), "note": {"seed": seed}}


def test_sweep_keeps_keys_that_only_some_arms_measure():
    def measure(arm, setting, seed):
        return {"x": 1.0, **({"only_b": 2.0} if arm == "b" else {})}

    out = fw.sweep(("a", "b"), measure, seeds=[0], progress=False)
    assert set(out["only_b"]) == {"b"}


def test_progress_bar_only_when_asked(capsys):
    pytest.importorskip("tqdm")
    fw.sweep(("a",), fake_measure_no_setting, seeds=[0, 1], progress=False)
    assert capsys.readouterr().err == ""
    fw.sweep(("a",), fake_measure_no_setting, seeds=[0, 1], progress=True, desc="fake")
    assert "fake" in capsys.readouterr().err
    assert fw.progress_bar(3, "x", enabled=False) is None


# -- Study: config, run, verdict, summary, save ----------------------------------------------
def test_quick_and_full_config():
    assert FAKE.config(quick=True) == {"scale": (1.0, 2.0), "n_seeds": 1}
    assert FAKE.config(quick=False) == {"scale": (1.0, 2.0, 3.0), "n_seeds": 2}
    assert FAKE.config(quick=True, n_seeds=3)["n_seeds"] == 3
    with pytest.raises(ValueError, match="unknown config key.*epochs"):
        FAKE.config(epochs=3)
    assert FAKE[1] == "Bigger is better"  # what the command line lists


def test_run_quick_and_full():
    quick = FAKE.run(quick=True, seed=10, progress=False)
    assert quick.seeds == [10] and quick.score["big"].shape == (2, 1)
    assert quick.config["scale"] == (1.0, 2.0) and quick.seed == 10
    assert quick.seconds >= 0
    full = FAKE.run(seed=0, progress=False)
    assert full.score["small"].shape == (3, 2)
    with pytest.raises(ValueError):
        FAKE.run(quick=True, lr=0.1)


def test_verdict_is_computed_from_the_data():
    r = FAKE.run(quick=True, progress=False)
    assert FAKE.verdict(r).supported is True
    r.score["big"] = np.zeros_like(r.score["big"])  # other data, other verdict
    assert FAKE.verdict(r).supported is False
    r.score["big"] = np.full_like(r.score["big"], np.nan)
    assert FAKE.verdict(r).supported is None
    assert str(fw.Verdict(True, "x")) == "Verdict: supported. x"
    assert str(fw.Verdict(False, "x")) == "Verdict: not supported. x"
    assert str(fw.Verdict(None, "x")) == "Verdict: mixed. x"


def test_summary_has_the_claim_the_numbers_and_the_verdict():
    text = FAKE.summary(FAKE.run(quick=True, progress=False))
    assert text.startswith("Claim: Bigger is better.")
    assert "big: " in text and text.endswith("Verdict: supported. big 3.00 against small 1.50")


def test_save_writes_the_plot_and_strict_json(tmp_path):
    r = FAKE.run(quick=True, progress=False)
    r.score["small"][0, 0] = np.nan
    r.score["big"][1, 0] = np.inf
    png, js = FAKE.save(r, str(tmp_path / "out"))
    assert open(png, "rb").read() == b"not really a png"
    text = open(js).read()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text)
    assert record["study"] == "fake" and record["claim"] == "Bigger is better"
    assert set(record["verdict"]) == {"supported", "text"}
    assert record["result"]["score"]["small"][0] == [None]
    assert record["result"]["score"]["big"][1] == [None]
    assert record["result"]["config"]["scale"] == [1.0, 2.0]


def test_run_and_save(tmp_path, monkeypatch):
    monkeypatch.setitem(studies.STUDIES, "fake", FAKE)
    lines = []
    result = studies.run_and_save("fake", str(tmp_path), quick=True, progress=False,
                                  echo=lines.append)
    assert isinstance(result, FakeResult)
    assert (tmp_path / "fake.png").exists() and (tmp_path / "fake.json").exists()
    assert "Verdict: supported." in lines[0] and "fake.json" in lines[1]
    with pytest.raises(ValueError, match="unknown experiment"):
        studies.get("nope")


def test_to_json_is_strict():
    @dataclass
    class Inner:
        a: float
        b: np.ndarray

    obj = {"x": [np.float32(1.5), np.int64(2), np.bool_(True), math.nan, -math.inf],
           1: Inner(np.float64(np.nan), np.array([[1.0, np.inf]])), "t": (1, "s", None)}
    out = fw.to_json(obj)
    assert out == {"x": [1.5, 2, True, None, None], "1": {"a": None, "b": [[1.0, None]]},
                   "t": [1, "s", None]}
    json.dumps(out, allow_nan=False)
    assert type(out["x"][1]) is int and type(out["x"][2]) is bool


def test_every_study_is_registered_under_its_module_name():
    assert list(studies.STUDIES) == ["learning_rate", "init", "activations", "entropy", "ics",
                                     "smoothness", "variants", "eval_mode", "depth",
                                     "scale_invariance", "regularization"]
    for name, study in studies.STUDIES.items():
        module = getattr(studies, name)
        assert module.STUDY is study and study.name == name
        assert module.run == study.run and module.summary == study.summary
        assert study.claim and not study.claim.endswith(".")
        assert set(study.full) <= set(study.quick)  # full lists only what differs


# -- snapshot ----------------------------------------------------------------------------------
def _model():
    return nn.Sequential(nn.Linear(3, 4, rng=0), nn.BatchNorm1d(4), nn.ReLU(),
                         nn.Linear(4, 2, rng=1))


def _state(model):
    return [t.data.copy() for t in list(model.parameters()) + list(model.buffers())]


def test_snapshot_restores_parameters_and_buffers():
    model = _model()
    before = _state(model)
    mean = model[1].running_mean.data.copy()
    with fw.snapshot(model) as m:
        assert m is model
        model(Tensor(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)))
        for p in model.parameters():
            p.data += 1.0
        assert not np.allclose(model[1].running_mean.data, mean)
    for u, v in zip(before, _state(model)):
        np.testing.assert_array_equal(u, v)


def test_snapshot_restores_even_when_the_body_raises():
    model = _model()
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with fw.snapshot(model):
            model[0].weight.data[...] = 7.0
            model[1].running_var.data[...] = -1.0
            raise RuntimeError("boom")
    for u, v in zip(before, _state(model)):
        np.testing.assert_array_equal(u, v)


# -- the training loop -----------------------------------------------------------------------
def test_batch_stream_is_fits_batch_order():
    stream = data.batch_stream(10, 3, seed=4)
    rng = np.random.default_rng(4)
    X, y = np.arange(10)[:, None], np.arange(10)
    for _ in range(3):  # three passes; each drops its last partial batch
        for _, yb in data.batches(X, y, 3, seed=rng, drop_last=True):
            np.testing.assert_array_equal(next(stream), yb)
    with pytest.raises(ValueError):
        next(data.batch_stream(4, 5))


def test_train_takes_each_step_on_the_next_batch():
    ds = data.load("moons", n=64, seed=0)
    model = nn.Sequential(nn.Linear(2, 8, rng=0), nn.ReLU(), nn.Linear(8, 2, rng=1))
    opt = optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def take_step(t, X, y):
        seen.append((t, len(y)))
        return fw.sgd_step(model, opt, X, y)

    losses = fw.train(model, ds, opt, steps=5, batch_size=16, seed=0, take_step=take_step)
    assert seen == [(t, 16) for t in range(1, 6)] and len(losses) == 5
    assert all(math.isfinite(v) for v in losses)
    plain = fw.train(model, ds, opt, steps=20, batch_size=16, seed=1)
    assert plain[-1] < losses[0]  # the default step trains


def test_train_stops_at_a_non_finite_loss():
    ds = data.load("moons", n=64, seed=0)
    model = nn.Sequential(nn.Linear(2, 2, rng=0))
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="diverged in step 3"):
        fw.train(model, ds, opt, steps=5, batch_size=16, seed=0,
                 take_step=lambda t, X, y: math.nan if t == 3 else 1.0)


def test_a_numpy_verdict_is_saved_as_json():
    assert fw.to_json(fw.Verdict(np.bool_(True), "x")) == {"supported": True, "text": "x"}
