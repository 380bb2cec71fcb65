"""reporting/document.py: the report of a run in HTML and Markdown (examples/ab-test.yaml, run)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from trialforge.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _images(text: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    ]


def test_the_report_renders_in_html_and_markdown(ab_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = ab_run
    html_path, md_path = tmp_path / "r.html", tmp_path / "r.md"
    assert main(["report", str(run_dir), "-o", str(html_path)]) == 0
    assert main(["report", str(run_dir), "--format", "md", "-o", str(md_path)]) == 0
    html = html_path.read_text()
    md = md_path.read_text()
    for text in (html, md):
        for words in ("Comparison with the baseline", "Optimisation history",
                      "Parallel coordinates", "Against the baseline", "Trials and lineage",
                      "better", "worse", "inconclusive", "CI (bootstrap)", "p (Holm)",
                      "example-1", "synthetic-v1", "TRIALFORGE_SEED="):  # fmt: skip
            assert words in text, words
        images = _images(text)
        assert len(images) >= 3 and all(i.startswith(PNG) for i in images)
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    assert "| arm | n |" in md
    # The default output lands in the run directory.
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").exists()
