"""The Quickstart as a new user meets it: two commands, the first installs only what the demo
needs (the ``demo`` extra) and runs it, the second installs the test tools and runs the tests;
every extra of pyproject.toml is listed in the README."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _quickstart_commands() -> list:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_commands_demo_then_tests():
    first, second = _quickstart_commands()
    assert '-e ".[demo]"' in first and first.endswith("tinygrad-bn demo")
    assert '-e ".[test]"' in second and second.endswith("python -m pytest -q")


def test_every_extra_is_listed_in_the_readme():
    extras = PYPROJECT["project"]["optional-dependencies"]
    table = README.split("The extras,", 1)[1].split("\n\n", 2)[1]
    listed = set(re.findall(r"^\| `([a-z0-9]+)` \|", table, re.M))
    assert listed == set(extras)
    demo = {re.split(r"[<>=\[]", d)[0] for d in extras["demo"]}
    assert demo == {"matplotlib", "tqdm"}  # and the two core dependencies, nothing else
    assert {re.split(r"[<>=\[]", d)[0] for d in PYPROJECT["project"]["dependencies"]} == {
        "numpy", "graphviz"}


def test_the_demo_needs_nothing_beyond_its_extra(tmp_path):
    """The demo runs with every package outside ``numpy, graphviz, matplotlib, tqdm`` blocked."""
    blocked = ["torch", "sklearn", "scipy", "hypothesis", "pytest", "playwright", "nbclient",
               "nbformat", "IPython", "ipykernel", "mkdocs", "mygrad", "autograd"]
    code = ("import sys\n"
            f"for m in {blocked!r}:\n    sys.modules[m] = None\n"
            "from tinygrad_bn.app.cli import main\n"
            "sys.exit(main(['demo', '--epochs', '1', '--no-progress', '--out', 'o']))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, MPLBACKEND="Agg"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert (tmp_path / "o").is_dir() and os.listdir(tmp_path / "o")
