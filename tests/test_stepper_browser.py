"""The backward stepper page as a learner sees it: loaded from file:// in headless Chromium
with every non-local request blocked, stepped with the keyboard and the buttons."""
import numpy as np

from tinygrad_bn import Tensor, grad, viz
from tinygrad_bn.nn import functional as F


def _page(browser, path):
    page = browser.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    def route(r):
        url = r.request.url
        if url.startswith("file://") or url.startswith("data:"):
            r.continue_()
        else:  # the page must need nothing from the network
            outside.append(url)
            r.abort()
    page.route("**/*", route)
    page.goto(path.as_uri())
    return page, errors, outside


def test_stepper_page_steps_through_backward_in_a_real_browser(browser, tmp_path, dot_binary):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((6, 3)), requires_grad=True, name="x")
    w = Tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True, name="γ")
    b = Tensor(rng.standard_normal(3), requires_grad=True, name="β")
    c = Tensor(rng.standard_normal((6, 3)))  # a loss whose gradients are not trivial
    loss = (F.batch_norm(x, None, None, w, b, training=True) * c).sum()
    path = tmp_path / "bn.html"
    viz.render_backward(loss, path)
    page, errors, outside = _page(browser, path)
    try:
        total = page.inner_text("#pos")
        assert total.startswith("step 1 / ")
        n = int(total.split("/")[1])
        assert page.locator("svg").count() >= 1
        assert page.locator("svg .cur").count() >= 1  # the node being processed is lit
        page.keyboard.press("ArrowRight")
        assert page.inner_text("#pos") == f"step 2 / {n}"
        page.click("#next")
        assert page.inner_text("#pos") == f"step 3 / {n}"
        page.keyboard.press("ArrowLeft")
        assert page.inner_text("#pos") == f"step 2 / {n}"
        panel = page.inner_text("#step")
        assert "gradient" in panel.lower()
        page.click("#last")
        assert page.inner_text("#pos").startswith("done")
        leaves = page.inner_text("#leaves")
        assert "x" in leaves and ".grad" in leaves and "summed into .grad" in leaves
        # x's contributions are summed on the page into autograd's gradient (its norm shown)
        (gx,) = grad(loss, x, retain_graph=True)
        x_part = leaves.split("γ (3,)")[0]
        sum_line = x_part.split("\nsum\n")[1]
        shown = float(sum_line.split("‖g‖ = ")[1].split(",")[0])
        assert abs(shown - np.linalg.norm(gx.data)) <= 1e-3 * np.linalg.norm(gx.data)
        assert errors == [] and outside == []
    finally:
        page.close()
    assert x.grad is None and w.grad is None  # looking changes nothing


def _tables(page, selector):
    """The numbers of every value table inside ``selector``, one flat list per table."""
    return page.eval_on_selector_all(
        selector + " table.vals",
        "ts => ts.map(t => Array.from(t.querySelectorAll('td')).map(td => td.textContent))")


def _go(page, k):
    page.keyboard.press("Home")
    for _ in range(k):
        page.keyboard.press("ArrowRight")


def test_shown_numbers_are_the_engines_and_the_three_terms_meet(browser, tmp_path,
                                                                dot_binary):
    """At several steps the numbers on the page are the engine's gradients (to the 5 digits
    shown); the derivation's three terms of x's gradient appear where the engine sums them:
    the two that meet at x − μ (through σ², direct) and the one mean sends x (through μ)."""
    from tinygrad_bn import grad_paths
    from tinygrad_bn.viz import stepper

    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True, name="x")
    w = Tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True, name="γ")
    b = Tensor(rng.standard_normal(3), requires_grad=True, name="β")
    c = Tensor(rng.standard_normal((4, 3)))
    loss = (F.batch_norm(x, None, None, w, b, training=True) * c).sum()
    data = stepper.trace_backward(loss, keep_arrays=True)
    exact = data["exact"]
    path = tmp_path / "bn.html"
    viz.render_backward(loss, path)
    page, errors, outside = _page(browser, path)

    def close(shown, want):
        got = np.array([float(v) for v in shown])
        np.testing.assert_allclose(got, np.ravel(want), rtol=6e-5, atol=1e-12)
    try:
        steps = data["steps"]
        for k in sorted({1, 3, len(steps) // 2, len(steps) - 1}):
            _go(page, k)
            s = steps[k]
            assert page.inner_text("#pos") == f"step {k + 1} / {len(steps)}"
            tables = _tables(page, "#step")
            if "contribs" in s:  # each contribution, then their sum, then what is sent on
                parts = exact["contribs"][s["node"]]
                for shown, want in zip(tables, parts + [exact["grads"][s["node"]]]):
                    close(shown, want)
            elif s["in"] is not None and s["in"].get("values") is not None:
                close(tables[0], exact["grads"][s["node"]])
        # the step of x − μ: two contributions meet, through σ² (from pow) and direct (div)
        nodes = data["nodes"]
        kd = next(i for i, s in enumerate(steps) if nodes[s["node"]]["label"] == "x - μ")
        _go(page, kd)
        meets = page.locator("#step .item.meet")
        assert meets.count() == 2
        senders = [nodes[c["from"]] for c in steps[kd]["contribs"]]
        by_op = {n["op"]: i for i, n in enumerate(senders)}
        paths = grad_paths(loss, x, via=("μ", "σ²", "x̂"))
        tables = _tables(page, "#step")
        close(tables[by_op["pow"]], paths["σ²"])
        close(tables[by_op["div"]], paths["x̂"])
        assert "sum" in page.inner_text("#step .item.sum")
        # the end: x received two contributions, one of them mean's (the term through μ)
        page.click("#last")
        xl = next(l for l in data["leaves"] if nodes[l["id"]]["label"] == "x")
        from_ops = [nodes[c["from"]]["op"] for c in xl["contribs"]]
        assert sorted(from_ops) == ["mean", "sub"]
        leaf_tables = _tables(page, "#leaves")
        close(leaf_tables[from_ops.index("mean")], paths["μ"])
        total = paths["μ"] + paths["σ²"] + paths["x̂"]
        (gx,) = grad(loss, x, retain_graph=True)
        np.testing.assert_allclose(total, gx.data, rtol=1e-10, atol=1e-12)
        close(leaf_tables[len(xl["contribs"])], gx.data)  # x's sum, as shown
        assert errors == [] and outside == []
    finally:
        page.close()
