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
