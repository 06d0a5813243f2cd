"""Optimizers and schedulers against torch: an MLP with BatchNorm takes the same steps.

Both models start from the same weights (torch's state_dict loaded as NumPy arrays), see the
same minibatches and the same loss; after every step the parameters, running statistics and
``num_batches_tracked`` must agree to 1e-10 (float64), and so must the outputs in train and
eval mode.
"""
import math

import numpy as np
import pytest

from tinygrad_bn import Tensor, nn, optim
from tinygrad_bn.nn import functional as F

TOL = 1e-10
N_IN, H1, H2, N_OUT = 5, 8, 6, 3
STEPS = 6
BATCH = 16


def _ours(bias):
    return nn.Sequential(
        nn.Linear(N_IN, H1, bias=bias, dtype=np.float64, rng=0),
        nn.BatchNorm1d(H1, dtype=np.float64), nn.ReLU(),
        # momentum=None: the cumulative average, which depends on num_batches_tracked
        nn.Linear(H1, H2, bias=bias, dtype=np.float64, rng=1),
        nn.BatchNorm1d(H2, momentum=None, dtype=np.float64), nn.ReLU(),
        nn.Linear(H2, N_OUT, dtype=np.float64, rng=2),
    )


def _theirs(torch, bias):
    torch.manual_seed(0)
    tn = torch.nn
    return tn.Sequential(
        tn.Linear(N_IN, H1, bias=bias), tn.BatchNorm1d(H1), tn.ReLU(),
        tn.Linear(H1, H2, bias=bias), tn.BatchNorm1d(H2, momentum=None), tn.ReLU(),
        tn.Linear(H2, N_OUT),
    ).double()


def _pair(torch, bias=True):
    """The two models with the same weights; torch's affine BN parameters are randomized so
    that they are not trivially ones and zeros.

    ``bias``: whether the Linear layers in front of a BatchNorm have a bias. Such a bias has a
    gradient of exactly zero in exact arithmetic (BN subtracts the batch mean), so what both
    engines compute is rounding noise of ~1e-17. SGD moves it by lr·noise, harmless; Adam
    divides the noise by its own root mean square and moves the bias by about lr in a random
    direction, so the two engines legitimately part ways. Adam's tests use ``bias=False``
    there (the usual choice in front of BatchNorm).
    """
    tm = _theirs(torch, bias)
    with torch.no_grad():
        for name, p in tm.named_parameters():
            if name in ("1.weight", "4.weight"):
                p.uniform_(0.5, 1.5)
            elif name in ("1.bias", "4.bias"):
                p.uniform_(-0.5, 0.5)
    ours = _ours(bias)
    sd = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    result = ours.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_same_state(ours, tm, "after loading")
    return ours, tm


def _assert_same_state(ours, tm, when):
    mine = ours.state_dict()
    theirs = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    assert list(mine) == list(theirs)
    for k, v in theirs.items():
        if k.endswith("num_batches_tracked"):
            assert int(mine[k]) == int(v), f"{k} {when}"
        else:
            np.testing.assert_allclose(mine[k], v, rtol=TOL, atol=TOL, err_msg=f"{k} {when}")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((BATCH, N_IN)) * 2 + 0.5 for _ in range(STEPS)]
    y = [rng.integers(0, N_OUT, BATCH) for _ in range(STEPS)]
    X_eval = rng.standard_normal((7, N_IN))
    return X, y, X_eval


def _run_pair(torch, make_ours, make_theirs, loss="ce", bias=True):
    ours, tm = _pair(torch, bias)
    opt = make_ours(list(ours.parameters()))
    topt = make_theirs(list(tm.parameters()))
    X, y, X_eval = _data()
    moved = False
    for step, (xb, yb) in enumerate(zip(X, y), 1):
        ours.train()
        tm.train()
        out = ours(Tensor(xb))
        tout = tm(torch.tensor(xb))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=TOL, atol=TOL,
                                   err_msg=f"train-mode output at step {step}")
        if loss == "ce":
            lo = F.cross_entropy(out, yb)
            tlo = torch.nn.functional.cross_entropy(tout, torch.tensor(yb))
        else:
            target = np.eye(N_OUT)[yb]
            lo = F.mse_loss(out, target)
            tlo = torch.nn.functional.mse_loss(tout, torch.tensor(target))
        assert abs(lo.item() - tlo.item()) < TOL
        opt.zero_grad()
        topt.zero_grad()
        lo.backward()
        tlo.backward()
        before = ours.state_dict()
        opt.step()
        topt.step()
        moved = moved or any(not np.array_equal(before[k], v)
                             for k, v in ours.state_dict().items() if k.endswith("weight"))
        _assert_same_state(ours, tm, f"after step {step}")
        ours.eval()
        tm.eval()
        np.testing.assert_allclose(ours(Tensor(X_eval)).data,
                                   tm(torch.tensor(X_eval)).detach().numpy(),
                                   rtol=TOL, atol=TOL, err_msg=f"eval output after step {step}")
    assert moved, "the optimizer never changed a weight"
    assert int(ours[1].num_batches_tracked.data) == STEPS
    return ours, tm


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.8, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.02),
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in
                                                                  kw.items()))
def test_sgd_matches_torch(torch, kw):
    _run_pair(torch, lambda ps: optim.SGD(ps, **kw), lambda ps: torch.optim.SGD(ps, **kw))


ADAM_CASES = [
    dict(lr=0.01),
    dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, amsgrad=True, weight_decay=0.05),
]


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("kw", ADAM_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in
                                                                   kw.items()))
def test_adam_and_adamw_match_torch(torch, cls, kw):
    _run_pair(torch, lambda ps: getattr(optim, cls)(ps, **kw),
              lambda ps: getattr(torch.optim, cls)(ps, **kw), bias=False)


def test_adamw_default_weight_decay_matches_torch(torch):
    assert optim.AdamW([Tensor(np.zeros(2), requires_grad=True)]).param_groups[0][
        "weight_decay"] == torch.optim.AdamW([torch.zeros(2, requires_grad=True)]).defaults[
        "weight_decay"]
    _run_pair(torch, lambda ps: optim.AdamW(ps, lr=0.05),
              lambda ps: torch.optim.AdamW(ps, lr=0.05), loss="mse", bias=False)


def test_adam_and_adamw_differ_with_weight_decay(torch):
    """L2 in the gradient (Adam) and decoupled decay (AdamW) are different updates."""
    a, _ = _run_pair(torch, lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.5),
                     lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.5), bias=False)
    w, _ = _run_pair(torch, lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.5),
                     lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.5), bias=False)
    assert np.abs(a[0].weight.data - w[0].weight.data).max() > 1e-4


def test_param_groups_with_their_own_settings_match_torch(torch):
    def groups(model):
        ps = list(model.parameters())
        return [{"params": ps[:4]}, {"params": ps[4:], "lr": 0.01, "momentum": 0.5}]

    ours, tm = _pair(torch)
    opt = optim.SGD(groups(ours), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(groups(tm), lr=0.1, momentum=0.9)
    X, y, _ = _data(1)
    for xb, yb in zip(X, y):
        opt.zero_grad()
        topt.zero_grad()
        F.cross_entropy(ours(Tensor(xb)), yb).backward()
        torch.nn.functional.cross_entropy(tm(torch.tensor(xb)), torch.tensor(yb)).backward()
        opt.step()
        topt.step()
    _assert_same_state(ours, tm, "after the steps")
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[0]["momentum"] == 0.9


def test_parameters_without_grad_are_left_alone():
    p = Tensor(np.ones(3), requires_grad=True)
    q = Tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam([p, q], lr=0.1, weight_decay=0.1)
    p.grad = np.ones(3)
    opt.step()
    assert np.all(p.data < 1) and np.array_equal(q.data, np.ones(3))
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=-0.1),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=-1),
    lambda ps: optim.SGD(ps, lr=0.1, nesterov=True),
    lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1),
    lambda ps: optim.Adam(ps, betas=(1.0, 0.999)),
    lambda ps: optim.Adam(ps, eps=-1),
    lambda ps: optim.SGD([], lr=0.1),
    lambda ps: optim.SGD(ps + ps, lr=0.1),
    lambda ps: optim.SGD([Tensor(np.ones(2))], lr=0.1),
])
def test_bad_optimizer_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make([Tensor(np.ones(2), requires_grad=True)])


# -- schedulers -----------------------------------------------------------------------------

def _lrs(opt, sched, opt_step, epochs):
    out = []
    for _ in range(epochs):
        out.append([g["lr"] for g in opt.param_groups])
        opt_step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize("which,kw", [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=20)),
    ("CosineAnnealingLR", dict(T_max=15, eta_min=0.001)),
])
def test_schedulers_give_torchs_learning_rates(torch, which, kw):
    epochs = 75  # past T_max: the cosine comes back up, as in torch
    p = [Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(3), requires_grad=True)]
    opt = optim.SGD([{"params": [p[0]]}, {"params": [p[1]], "lr": 0.03}], lr=0.1,
                    momentum=0.9)
    sched = getattr(optim, which)(opt, **kw)
    tp = [torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)]
    topt = torch.optim.SGD([{"params": [tp[0]]}, {"params": [tp[1]], "lr": 0.03}], lr=0.1,
                           momentum=0.9)
    tsched = getattr(torch.optim.lr_scheduler, which)(topt, **kw)
    ours = _lrs(opt, sched, opt.step, epochs)
    theirs = _lrs(topt, tsched, topt.step, epochs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-10)
    assert len(np.unique(ours[:, 0])) > 3  # the schedule really moved


def test_scheduler_formulas():
    p = Tensor(np.ones(1), requires_grad=True)
    opt = optim.SGD([p], lr=1.0)
    s = optim.StepLR(opt, step_size=3, gamma=0.1)
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        s.step()
    assert seen == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01])
    opt = optim.SGD([p], lr=1.0)
    c = optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.2)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        c.step()
    half = 0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2
    assert seen == pytest.approx([1.0, half, 0.6, 0.2 + 0.8 * (1 - math.cos(math.pi / 4)) / 2,
                                  0.2])
    with pytest.raises(ValueError):
        optim.StepLR(opt, step_size=0)
    with pytest.raises(ValueError):
        optim.CosineAnnealingLR(opt, T_max=0)
