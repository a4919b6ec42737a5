"""The README's "A sweep of your own model and data" example runs as written and prints one line
per run."""
import contextlib
import io
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _section_code(heading: str) -> str:
    """The first ```python block after the line `heading` of README.md."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert f"\n{heading}\n" in text, f"README.md has no heading {heading!r}"
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_own_model_and_data_example_runs_as_written():
    code = _section_code("### A sweep of your own model and data")
    assert len(code.splitlines()) <= 40
    # the example trains on arrays: a DataConfig beside them would not be used
    assert "DataConfig" not in code and "from_arrays" in code
    out = io.StringIO()
    scope = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and all(line.startswith("SmallCNN ") for line in lines)
    assert [float(line.split()[1]) for line in lines] == [1e-4, 1e-4, 1e-3, 1e-3]
    assert set(scope["params"]) == {"conv1", "bn1", "conv2", "bn2", "head"}
    assert set(scope["stats"]) == {"bn1", "bn2"}


def test_optimizer_example_runs_as_written():
    code = _section_code("### Optimizers, schedules and weight decay per parameter group")
    out = io.StringIO()
    scope = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert [(float(a), float(b)) for a, b, _ in rows] == [(1e-4, 1e-4), (1e-4, 1e-2),
                                                          (1e-2, 1e-4), (1e-2, 1e-2)]
    assert all(r["optimizer"] == "adamw" for r in scope["runs"])
