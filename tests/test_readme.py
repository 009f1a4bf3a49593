"""The README's "Your own model" snippet runs as written (in a temporary directory)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_own_model_snippet_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboardX")
    text = README.read_text()
    section = text[text.index("## Your own model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    rec = scope["rec"]
    assert set(rec) >= {"E_g", "E_g_theory", "mode_error", "mode_error_theory"}
    assert rec["E_g"] < scope["monitor"].target_power.sum()  # it learned something
    assert any((tmp_path / "runs" / "my_model").rglob("events.out.tfevents*"))
