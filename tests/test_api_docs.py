"""docs/api.md's "From your own graph project" snippets run, in order, as one script: the
documentation shows what works (issue 16)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dgl")

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_api_doc_snippets_run(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## From your own graph project"):]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 6
    script = "from pathlib import Path\nworkdir = Path(r'%s')\n" % tmp_path + "\n".join(blocks)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SKU-" in out.stdout
