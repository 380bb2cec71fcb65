#!/usr/bin/env python3
"""Build the project's images without Docker: buildah + a stand-in base image.

The Dockerfiles of images/ name `python:3.11.14-slim-bookworm` as their base.
Where that image cannot be pulled, `build_base()` makes a stand-in under the
same name from Debian bookworm packages (mmdebstrap: python3, python3-venv,
ca-certificates; `/usr/local/bin/python` -> python3), imported into a buildah
storage of our own under ~/.cache/trialforge/buildah. `build_image(name)` then
builds images/<name>/Dockerfile from the repository root with
`buildah bud --pull=never --isolation=chroot` and writes a docker-archive tar
(which `ctr -n k8s.io images import` accepts) under ~/.cache/trialforge/images/.

A tar is rebuilt only when its cache key changes: the sha256 of the Dockerfile,
every file of the build context (the repository root minus .dockerignore's
patterns and .git), the base image's id and the build args.

    python3 e2e/tfimages.py [build] [--only operator|trainer] [--force] [--list] [--json]

Progress goes to stderr, the tar paths to stdout. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tfcluster import ClusterError, cache_root, file_lock, log

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "python:3.11.14-slim-bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_SUITE = "bookworm"
BASE_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
BASE_RECIPE = 1  # bump when build_base() makes a different rootfs from the same inputs
# Read-only into every RUN: pip (and apt over https) must trust this host's CA bundle.
RUN_VOLUMES = (
    "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
    "/etc/pip.conf:/etc/pip.conf:ro",
)


@dataclass(frozen=True)
class Image:
    name: str  # operator | trainer
    ref: str  # the image's name in the tar
    dockerfile: str  # relative to the repository root
    build_args: dict[str, str] = field(default_factory=dict)


# In build order: the trainer last, it is the slow one (~2.8 GB of CUDA wheels from PyPI).
IMAGES: dict[str, Image] = {
    "operator": Image("operator", "trialforge/operator:dev", "images/operator/Dockerfile"),
    "trainer": Image(
        "trainer",
        "trialforge/trainer:dev",
        "images/trainer/Dockerfile",
        # download.pytorch.org is not reachable here; PyPI's torch is the CUDA build.
        {"TORCH_INDEX_URL": "https://pypi.org/simple"},
    ),
}


# ---------------------------------------------------------------------------
# The cache key
# ---------------------------------------------------------------------------


def read_dockerignore(root: Path) -> list[str]:
    f = root / ".dockerignore"
    if not f.is_file():
        return []
    pats = []
    for line in f.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append(line.strip("/"))
    return pats


def _glob_re(pat: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay inside one folder,
    `**` crosses folders (Go's filepath.Match plus Docker's `**`)."""
    out, i = [], 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pat.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matches the path or one of its parent folders
    (anchored at the context root); `!pattern` takes a match back (the last
    matching pattern wins)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        rx = _glob_re(pat[1:] if neg else pat)
        if any(rx.fullmatch(pre) for pre in prefixes):
            ignored = not neg
    return ignored


def context_files(root: Path) -> list[str]:
    """The build context's files, relative and sorted: root minus .git and .dockerignore."""
    patterns = read_dockerignore(root)
    negated = any(p.startswith("!") for p in patterns)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for d in dirnames:
            rel = rel_dir + d
            # a folder is skipped whole unless a `!pattern` may take back a file in it
            if rel == ".git" or (not negated and _ignored(rel, patterns)):
                continue
            keep.append(d)
        dirnames[:] = sorted(keep)
        for f in filenames:
            rel = rel_dir + f
            if rel == ".git" or _ignored(rel, patterns):
                continue
            out.append(rel)
    return sorted(out)


def cache_key(root: Path, dockerfile: str, base_id: str, build_args: dict[str, str]) -> str:
    """sha256 of the Dockerfile, every context file (path, exec bit, contents),
    the base image id and the build args."""
    h = hashlib.sha256()
    h.update(b"dockerfile\0" + (root / dockerfile).read_bytes() + b"\0")
    for rel in context_files(root):
        p = root / rel
        if p.is_symlink():
            digest = "link:" + os.readlink(p)
        elif p.is_file():
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if os.access(p, os.X_OK):
                digest += "+x"
        else:
            continue
        h.update(f"file\0{rel}\0{digest}\0".encode())
    h.update(f"base\0{base_id}\0".encode())
    for k in sorted(build_args):
        h.update(f"arg\0{k}={build_args[k]}\0".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------
# buildah
# ---------------------------------------------------------------------------


def buildah_root() -> Path:
    return cache_root() / "buildah"


def images_dir() -> Path:
    return cache_root() / "images"


_DRIVER: list[str] = []


def storage_driver() -> str:
    """overlay when this kernel lets buildah use it, else vfs (decided once, kept)."""
    if _DRIVER:
        return _DRIVER[0]
    stamp = buildah_root() / "driver"
    if stamp.is_file():
        _DRIVER.append(stamp.read_text().strip())
        return _DRIVER[0]
    if not shutil.which("buildah"):
        raise ClusterError("buildah not found: apt-get install buildah (Debian bookworm has 1.28)")
    driver = "vfs"
    r = buildah_root()
    base = ["buildah", "--root", str(r / "root"), "--runroot", str(r / "runroot")]
    probe = subprocess.run(
        [*base, "--storage-driver", "overlay", "from", "scratch"], capture_output=True, text=True
    )
    if probe.returncode == 0:
        driver = "overlay"
        buildah("rm", probe.stdout.strip(), driver=driver)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(driver + "\n")
    _DRIVER.append(driver)
    return driver


def buildah(*args: str, driver: str | None = None, capture: bool = True) -> str:
    r = buildah_root()
    cmd = ["buildah", "--root", str(r / "root"), "--runroot", str(r / "runroot")]
    cmd += ["--storage-driver", driver or storage_driver(), *args]
    res = subprocess.run(
        cmd, stdout=subprocess.PIPE if capture else sys.stderr, stderr=subprocess.PIPE, text=True
    )
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-15:])
        what = "buildah " + " ".join(args[:2])
        raise ClusterError(f"{what}... failed (exit {res.returncode}):\n{tail}")
    return (res.stdout or "").strip() if capture else ""


def image_id(ref: str) -> str | None:
    try:
        out = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
    except ClusterError:
        return None
    return out or None


def base_key() -> str:
    h = hashlib.sha256()
    h.update(f"{BASE_RECIPE}\0{BASE_SUITE}\0{' '.join(BASE_PACKAGES)}\0".encode())
    h.update(BASE_SOURCES.read_bytes() if BASE_SOURCES.is_file() else b"")
    return h.hexdigest()


def build_base(force: bool = False) -> str:
    """The stand-in `python:3.11.14-slim-bookworm` in our storage; returns its id."""
    r = buildah_root()
    r.mkdir(parents=True, exist_ok=True)
    stamp = r / "base.key"
    key = base_key()
    with file_lock(r / ".lock"):
        have = image_id(BASE_IMAGE)
        if have and not force and stamp.is_file() and stamp.read_text().strip() == key:
            return have
        if not shutil.which("mmdebstrap"):
            raise ClusterError("mmdebstrap not found: apt-get install mmdebstrap")
        t0 = time.monotonic()
        log(f"base: {BASE_IMAGE} from Debian {BASE_SUITE} ({', '.join(BASE_PACKAGES)})")
        with tempfile.TemporaryDirectory(prefix=".base-", dir=r) as tmp:
            tar = Path(tmp) / "rootfs.tar"
            src = str(BASE_SOURCES) if BASE_SOURCES.is_file() else "http://deb.debian.org/debian"
            cmd = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES)]
            cmd += [
                '--customize-hook=ln -sf /usr/bin/python3 "$1/usr/local/bin/python"',
                '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
            ]
            if BASE_SOURCES.is_file():
                cmd += [
                    '--customize-hook=rm -f "$1/etc/apt/sources.list"; mkdir -p '
                    f'"$1/etc/apt/sources.list.d"; cp {BASE_SOURCES} "$1/etc/apt/sources.list.d/"'
                ]
            cmd += [BASE_SUITE, str(tar), src]
            res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if res.returncode != 0:
                tail = "\n".join(res.stderr.strip().splitlines()[-15:])
                raise ClusterError(f"mmdebstrap failed (exit {res.returncode}):\n{tail}")
            ctr = buildah("from", "scratch")
            try:
                buildah("add", ctr, str(tar), "/")
                buildah(
                    "config",
                    "--env",
                    "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env",
                    "LANG=C.UTF-8",
                    "--cmd",
                    "python3",
                    ctr,
                )
                buildah("commit", "--quiet", ctr, BASE_IMAGE)
            finally:
                buildah("rm", ctr)
        prune()
        stamp.write_text(key + "\n")
        have = image_id(BASE_IMAGE)
        if not have:
            raise ClusterError(f"{BASE_IMAGE} is not in {r} after its build")
        log(f"base: {have[:12]} in {time.monotonic() - t0:.0f}s")
        return have


def prune() -> None:
    """No containers left behind (bud's intermediate ones included), no dangling images."""
    buildah("rm", "--all")
    buildah("rmi", "--prune")


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


def tar_path(img: Image, key: str) -> Path:
    return images_dir() / f"trialforge-{img.name}-{key[:16]}.tar"


def build_image(name: str, force: bool = False, root: Path = REPO) -> Path:
    """images/<name>/Dockerfile built with buildah; returns its docker-archive tar."""
    if name not in IMAGES:
        raise ClusterError(f"no image {name!r}; known: {', '.join(IMAGES)}")
    img = IMAGES[name]
    base_id = build_base()
    key = cache_key(root, img.dockerfile, base_id, img.build_args)
    out = tar_path(img, key)
    images_dir().mkdir(parents=True, exist_ok=True)
    with file_lock(buildah_root() / ".lock"):
        if out.is_file() and not force:
            log(f"{img.ref}: cached ({out.name})")
            return out
        t0 = time.monotonic()
        log(f"{img.ref}: building {img.dockerfile} (key {key[:16]})")
        cmd = ["bud", "--pull=never", "--isolation=chroot", "--force-rm", "--layers=false"]
        for v in RUN_VOLUMES:
            if Path(v.split(":")[0]).exists():
                cmd += ["--volume", v]
        for k in sorted(img.build_args):
            cmd += ["--build-arg", f"{k}={img.build_args[k]}"]
        cmd += ["--file", str(root / img.dockerfile), "--tag", img.ref, str(root)]
        try:
            buildah(*cmd, capture=False)
        finally:
            prune()
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            # by id: the tar then names only docker.io/<ref>, not buildah's localhost/<ref> too
            built = image_id(img.ref)
            if not built:
                raise ClusterError(f"{img.ref} is not in {buildah_root()} after its build")
            buildah("push", "--quiet", built, f"docker-archive:{tmp}:{img.ref}")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        for old in images_dir().glob(f"trialforge-{img.name}-*.tar"):
            if old != out:
                old.unlink()
        mb = out.stat().st_size / 1e6
        log(f"{img.ref}: {out.name}, {mb:.0f} MB, in {time.monotonic() - t0:.0f}s")
        return out


def image_tars(only: list[str] | None = None, force: bool = False) -> dict[str, Path]:
    """{ref: tar} for every image (or `only` those), built when their key changed."""
    return {IMAGES[n].ref: build_image(n, force=force) for n in (only or list(IMAGES))}


def cached_tars() -> dict[str, Path]:
    """The tars already built for the current sources (no build)."""
    out: dict[str, Path] = {}
    base_id = image_id(BASE_IMAGE) if buildah_root().is_dir() else None
    if not base_id:
        return out
    for img in IMAGES.values():
        p = tar_path(img, cache_key(REPO, img.dockerfile, base_id, img.build_args))
        if p.is_file():
            out[img.ref] = p
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tfimages", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", nargs="?", default="build", choices=["build"])
    ap.add_argument("--only", action="append", choices=list(IMAGES), help="build only this image")
    ap.add_argument("--force", action="store_true", help="rebuild even when the key is unchanged")
    ap.add_argument("--list", action="store_true", help="print the cached tars, build nothing")
    ap.add_argument("--json", action="store_true", help="print {image: tar} as JSON")
    a = ap.parse_args(argv)
    try:
        tars = cached_tars() if a.list else image_tars(a.only, force=a.force)
    except ClusterError as e:
        print(f"tfimages: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps({k: str(v) for k, v in tars.items()}, indent=2))
    else:
        for ref, p in tars.items():
            print(f"{ref}\t{p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
