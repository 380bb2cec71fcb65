"""reporting/document.py: the report of a run in HTML and Markdown (examples/ab-test.yaml, run)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from trialforge.cli import main


def _images(text: str) -> list[str]:
    """The plots: inline SVG (HTML) or SVG data URIs (Markdown)."""
    inline = re.findall(r"<svg .*?</svg>", text, flags=re.S)
    uris = re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", text)
    return inline + [base64.b64decode(m).decode() for m in uris]


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
                      "Learning curves",
                      "better", "worse", "inconclusive", "CI (bootstrap)", "p (Holm)",
                      "example-1", "synthetic-v1", "TRIALFORGE_SEED="):  # fmt: skip
            assert words in text, words
        images = _images(text)
        assert len(images) >= 4 and all(i.startswith("<svg") for i in images)
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    assert "| arm | n |" in md
    # The default output lands in the run directory.
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").exists()
