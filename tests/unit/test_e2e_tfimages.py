"""The cache key of e2e/tfimages.py (what decides that an image is rebuilt).

Nothing is built here: the key is computed over a small fake build context.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))
import tfimages  # noqa: E402

DOCKERIGNORE = """# comment
.git
.venv
**/__pycache__
**/*.pyc
runs
*.egg-info
"""


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    (tmp_path / ".dockerignore").write_text(DOCKERIGNORE)
    (tmp_path / "images/op").mkdir(parents=True)
    (tmp_path / "images/op/Dockerfile").write_text("FROM base\nCOPY src/ src/\n")
    (tmp_path / "src/pkg").mkdir(parents=True)
    (tmp_path / "src/pkg/mod.py").write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return tmp_path


def key(root: Path, base: str = "sha256:base", args: dict[str, str] | None = None) -> str:
    return tfimages.cache_key(root, "images/op/Dockerfile", base, args or {})


def test_key_is_stable(ctx: Path) -> None:
    assert key(ctx) == key(ctx)
    assert len(key(ctx)) == 64


def test_ignored_files_do_not_change_the_key(ctx: Path) -> None:
    k = key(ctx)
    for rel in (
        ".git/HEAD",
        ".venv/bin/python",
        "src/pkg/__pycache__/mod.cpython-311.pyc",
        "src/other.pyc",
        "runs/r1/state.json",
        "trialforge.egg-info/PKG-INFO",
    ):
        p = ctx / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("noise")
    assert key(ctx) == k
    files = tfimages.context_files(ctx)
    assert files == [".dockerignore", "images/op/Dockerfile", "pyproject.toml", "src/pkg/mod.py"]


@pytest.mark.parametrize(
    "change",
    ["edit", "new file", "rename", "dockerfile", "dockerignore", "exec bit"],
)
def test_context_changes_change_the_key(ctx: Path, change: str) -> None:
    k = key(ctx)
    if change == "edit":
        (ctx / "src/pkg/mod.py").write_text("x = 2\n")
    elif change == "new file":
        (ctx / "src/pkg/new.py").write_text("")
    elif change == "rename":
        (ctx / "src/pkg/mod.py").rename(ctx / "src/pkg/mod2.py")
    elif change == "dockerfile":
        (ctx / "images/op/Dockerfile").write_text("FROM base\n")
    elif change == "dockerignore":
        (ctx / ".dockerignore").write_text(DOCKERIGNORE + "docs\n")
    elif change == "exec bit":
        (ctx / "src/pkg/mod.py").chmod(0o755)
    assert key(ctx) != k


def test_base_and_build_args_are_in_the_key(ctx: Path) -> None:
    k = key(ctx)
    assert key(ctx, base="sha256:other") != k
    assert key(ctx, args={"TORCH_INDEX_URL": "https://pypi.org/simple"}) != k
    a = key(ctx, args={"A": "1", "B": "2"})
    assert key(ctx, args={"B": "2", "A": "1"}) == a  # order does not matter
    assert key(ctx, args={"A": "1", "B": "3"}) != a


def test_dockerignore_rules() -> None:
    pats = ["build", "**/__pycache__", "*.egg-info", "docs/*.md", "!docs/keep.md"]
    ign = tfimages._ignored
    assert ign("build", pats) and ign("build/lib/x.py", pats)
    assert not ign("src/build.py", pats)
    assert not ign("src/build/x.py", pats)  # a plain pattern is anchored at the root
    assert ign("__pycache__/x.pyc", pats) and ign("a/b/__pycache__/x.pyc", pats)
    assert ign("x.egg-info/PKG-INFO", pats) and not ign("a/x.egg-info/PKG-INFO", pats)
    assert ign("docs/a.md", pats) and not ign("docs/keep.md", pats)


def test_the_repository_images_are_known() -> None:
    for img in tfimages.IMAGES.values():
        assert (REPO / img.dockerfile).is_file()
    assert list(tfimages.IMAGES) == ["operator", "trainer"]  # the slow trainer last
    assert tfimages.IMAGES["trainer"].build_args["TORCH_INDEX_URL"] == "https://pypi.org/simple"
