"""``tinygrad_bn.compare``: autograd vs hand-derived vs numeric, as a report."""
import numpy as np
import pytest

from tinygrad_bn.compare import NORMS, CompareReport, compare, compare_all


@pytest.fixture(scope="module")
def report():
    return compare_all()


def test_compare_all_passes_except_the_tutorials_formula(report):
    assert report.ok and not report.passed
    failing = report.failures()
    assert failing and all(r.expected_fail for r in failing)
    assert {r.grad for r in failing} == {"x"}
    assert {r.pair for r in failing} == {"hand-derived vs autograd", "hand-derived vs numeric"}
    assert all("boxed" in r.norm for r in failing)
    assert all(r.max_rel > 0.1 for r in failing)
    # every other row agrees closely, including the boxed formula's dγ and dβ
    for r in report.rows:
        if not r.expected_fail:
            assert r.passed and r.max_abs < 1e-7, r


def test_compare_all_covers_every_norm_and_pair(report):
    labels = " ".join(r.norm for r in report.rows)
    for name in ("batch_norm (train)", "batch_norm (eval)", "layer_norm", "group_norm",
                 "instance_norm", "rms_norm", "boxed"):
        assert name in labels
    assert {r.pair for r in report.rows} == {"hand-derived vs autograd", "autograd vs numeric",
                                              "hand-derived vs numeric"}
    assert {r.grad for r in report.rows} == {"x", "γ", "β"}
    assert not any(r.grad == "β" and r.norm.startswith("rms_norm") for r in report.rows)


def test_report_prints_an_aligned_table(report):
    text = str(report)
    lines = text.splitlines()
    header = lines[0]
    assert header.split() == ["norm", "shape", "grad", "pair", "max", "abs", "err", "max",
                              "rel", "err", "result"]
    table = lines[2:2 + len(report.rows)]
    col = header.index("result")
    assert all(len(line) >= col and line[col - 2:col] == "  " for line in table)
    assert sum("FAIL (expected)" in line for line in table) == len(report.failures())
    assert "as expected" in lines[-1] and "UNEXPECTED" not in text
    assert "boxed formula" in lines[-1]


@pytest.mark.parametrize("norm,shape,kw", [
    ("batch_norm", (5, 2), {}),
    ("batch_norm", (3, 2, 4), {"training": False}),
    ("layer_norm", (3, 4), {}),
    ("group_norm", (2, 4, 3), {"num_groups": 2}),
    ("instance_norm", (2, 3, 4), {}),
    ("rms_norm", (3, 2, 3), {"normalized_shape": (2, 3)}),
])
def test_compare_one_norm(norm, shape, kw):
    r = compare(norm, shape, seed=3, **kw)
    assert isinstance(r, CompareReport) and r.passed and r.ok
    assert all(row.shape == shape for row in r.rows)


def test_compare_in_float32_uses_float32_tolerances():
    r = compare("batch_norm", (16, 3), dtype=np.float32)
    assert r.passed
    assert {(row.atol, row.rtol) for row in r.rows} == {(1e-3, 1e-2)}
    assert max(row.max_abs for row in r.rows if row.pair != "hand-derived vs autograd") > 1e-9


def test_tight_tolerances_fail_and_unknown_norms_raise():
    assert not compare("layer_norm", (3, 4), atol=0.0, rtol=1e-14).passed
    with pytest.raises(ValueError, match="unknown norm"):
        compare("weight_norm", (3, 4))
    assert "tutorial_boxed_batch_norm" in NORMS


def test_boxed_formula_in_eval_mode_is_right():
    """Without batch statistics there is nothing for the √m to multiply: the rows pass."""
    r = compare("tutorial_boxed_batch_norm", (6, 3), training=False)
    assert r.passed and r.ok


def test_compact_table_has_one_row_per_norm_and_pair(report):
    text = report.table(compact=True)
    body = text.split("\n\n")[0].splitlines()[2:]
    groups = {(r.norm, r.shape, r.pair) for r in report.rows}
    assert len(body) == len(groups)
    boxed = [line for line in body if "boxed" in line]
    assert sum("FAIL (expected)" in line for line in boxed) == 2
    assert all(" x " in line for line in boxed if "FAIL" in line)


def test_compare_accepts_your_own_norm_and_its_hand_written_backward():
    from tinygrad_bn.compare import (BesselBatchNormNoFactorOp, BesselBatchNormOp,
                                     bessel_batch_norm, compare)

    good = compare(bessel_batch_norm, (12, 3), derived=BesselBatchNormOp.apply)
    assert good.passed and good.ok
    assert {r.grad for r in good.rows} == {"x", "γ", "β"}
    bad = compare(bessel_batch_norm, (12, 3), derived=BesselBatchNormNoFactorOp.apply)
    failing = bad.failures()
    assert failing and {r.grad for r in failing} == {"x"}
    assert {r.pair for r in failing} == {"hand-derived vs autograd", "hand-derived vs numeric"}
    assert not bad.ok
    marked = compare(bessel_batch_norm, (12, 3), derived=BesselBatchNormNoFactorOp.apply,
                     expect_wrong_dx=True)
    assert marked.ok and not marked.passed


def test_compare_your_own_norm_with_param_shape_and_errors():
    from tinygrad_bn.compare import compare

    def scale_norm(x, w, b):  # RMS-like over the last axis, weight over it
        return x / ((x * x).mean(-1, keepdim=True) + 1e-5).sqrt() * w + b

    report = compare(scale_norm, (4, 5), derived=scale_norm, param_shape=(5,), label="mine")
    assert report.passed and report.rows[0].norm == "mine"
    with pytest.raises(TypeError, match="derived="):
        compare(scale_norm, (4, 5))
    with pytest.raises(TypeError, match="your own norm"):
        compare("batch_norm", (4, 5), derived=scale_norm)
