"""The README's "Bring your own model" example runs as written and prints one line per run."""
import contextlib
import io
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _section_code(title: str) -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split(f"## {title}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_bring_your_own_model_example_runs_as_written():
    code = _section_code("Bring your own model")
    assert len(code.splitlines()) <= 40
    out = io.StringIO()
    scope = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and all(line.startswith("SmallCNN ") for line in lines)
    assert [float(line.split()[1]) for line in lines] == [1e-4, 1e-4, 1e-3, 1e-3]
    assert set(scope["params"]) == {"conv1", "bn1", "conv2", "bn2", "head"}
    assert set(scope["stats"]) == {"bn1", "bn2"}
