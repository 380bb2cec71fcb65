#!/usr/bin/env python3
"""Trialforge's local Kubernetes control plane: build, start, stop (stdlib only).

The binaries are built with the Go toolchain from Go modules pinned in
e2e/tools/*/go.mod and cached outside the repository; the cluster is started by
kwokctl's "binary" runtime with those binaries (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok-controller). See e2e/README.md.

Entry points: e2e/build (= `tfcluster.py build`) and e2e/cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

E2E = Path(__file__).resolve().parent
REPO = E2E.parent
TOOLS = E2E / "tools"
STAGES = E2E / "kwok" / "stages.yaml"
MIN_GO = (1, 26)
DEFAULT_NAME = "trialforge"
KUBE_LDFLAGS_DATE = "2026-01-01T00:00:00Z"  # fixed: reproducible builds


class ClusterError(RuntimeError):
    """A failure with a message meant for people."""


def log(msg: str) -> None:
    print(f"[e2e] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """One wrapper module in e2e/tools/<name> and the binaries built from it."""

    name: str
    module: str  # the pinned upstream module, required in e2e/tools/<name>/go.mod
    packages: dict[str, str] = field(default_factory=dict)  # binary -> package path
    # symlinked into bin_dir()? CNI plugins are not: `bridge` would shadow iproute2's
    linked: bool = True
    # (dest, src): directories of the module copied into the tool's cache dir at build
    # time (Kueue's CRDs), so `up` needs neither Go nor the module cache
    copies: tuple[tuple[str, str], ...] = ()

    @property
    def dir(self) -> Path:
        return TOOLS / self.name

    def version(self) -> str:
        if not self.module:  # a program of ours (tools/pause)
            return "local"
        text = (self.dir / "go.mod").read_text()
        m = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)} (v\S+)", text, re.M)
        if not m:
            raise ClusterError(f"{self.dir}/go.mod does not require {self.module}")
        return m.group(1)

    def ldflags(self) -> list[str]:
        flags = ["-s", "-w"]
        v = self.version()
        if self.name == "kube":
            major, minor = v.lstrip("v").split(".")[:2]
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
                for key, val in (
                    ("gitVersion", v),
                    ("gitMajor", major),
                    ("gitMinor", minor),
                    ("gitTreeState", "clean"),
                    ("buildDate", KUBE_LDFLAGS_DATE),
                ):
                    flags.append(f"-X={pkg}.{key}={val}")
        elif self.name == "helm":
            flags += [
                f"-X=helm.sh/helm/v3/internal/version.version={v}",
                "-X=helm.sh/helm/v3/internal/version.gitTreeState=clean",
            ]
            text = (self.dir / "go.mod").read_text()
            m = re.search(r"k8s\.io/client-go v0\.(\d+)\.", text)
            if m:
                for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
                    flags += [
                        f"-X={pkg}.k8sVersionMajor=1",
                        f"-X={pkg}.k8sVersionMinor={m.group(1)}",
                    ]
        elif self.name == "kueue":  # what Kueue's Makefile stamps (no git commit here)
            flags += [
                f"-X=sigs.k8s.io/kueue/pkg/version.GitVersion={v}",
                f"-X=sigs.k8s.io/kueue/pkg/version.BuildDate={KUBE_LDFLAGS_DATE}",
            ]
        return flags

    def stamp(self) -> str:
        h = hashlib.sha256()
        for f in sorted(self.dir.iterdir()):
            if f.suffix in (".mod", ".sum", ".go"):
                data = f.read_bytes()
                if f.suffix == ".mod":  # comments don't change what is built
                    data = re.sub(rb"(?m)^\s*//.*\n", b"", data)
                h.update(f.name.encode() + b"\0" + data)
        h.update(json.dumps([self.ldflags(), sorted(self.packages.items())]).encode())
        if self.copies:
            h.update(json.dumps(sorted(self.copies)).encode())
        return h.hexdigest()


TOOLSET: tuple[Tool, ...] = (
    Tool("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "."}),
    Tool(
        "kwok",
        "sigs.k8s.io/kwok",
        {"kwok": "sigs.k8s.io/kwok/cmd/kwok", "kwokctl": "sigs.k8s.io/kwok/cmd/kwokctl"},
    ),
    Tool(
        "kube",
        "k8s.io/kubernetes",
        {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            # the real node (`up --real-node`): same module, same -X version stamps
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
            "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        },
    ),
    Tool("helm", "helm.sh/helm/v3", {"helm": "helm.sh/helm/v3/cmd/helm"}),
    # the real node (`up --real-node`): CNI plugins and cluster DNS
    Tool(
        "cni",
        "github.com/containernetworking/plugins",
        {
            "bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
            "host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
            "loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
            "portmap": "github.com/containernetworking/plugins/plugins/meta/portmap",
        },
        linked=False,
    ),
    Tool("coredns", "github.com/coredns/coredns", {"coredns": "github.com/coredns/coredns"}),
    # our own sandbox ("pause") program, no upstream module: version "local", rebuilt by stamp
    Tool("pause", "", {"pause": "."}, linked=False),
    # `up --kueue`: the Kueue controller manager, and its CRDs copied from the module
    Tool(
        "kueue",
        "sigs.k8s.io/kueue",
        {"kueue": "sigs.k8s.io/kueue/cmd/kueue"},
        copies=(("crds", "config/components/crd/bases"),),
    ),
)


def cache_root() -> Path:
    env = os.environ.get("TRIALFORGE_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trialforge"


def tool_dir(tool: Tool) -> Path:
    return cache_root() / f"{tool.name}-{tool.version()}"


def bin_dir() -> Path:
    """One directory with every tool (symlinks into the versioned cache dirs)."""
    return cache_root() / "bin"


def tool_is_built(tool: Tool) -> bool:
    d = tool_dir(tool)
    stamp = d / "stamp"
    if not stamp.is_file() or stamp.read_text().strip() != tool.stamp():
        return False
    if not all((d / dest).is_dir() for dest, _ in tool.copies):
        return False
    return all(os.access(d / "bin" / b, os.X_OK) for b in tool.packages)


def find_go() -> tuple[str, str]:
    override = os.environ.get("TRIALFORGE_GO")
    go = override or shutil.which("go")
    if override and not os.access(override, os.X_OK):
        raise ClusterError(f"TRIALFORGE_GO={override} is not an executable Go toolchain")
    if not go:
        for cand in ("/usr/local/go/bin/go", str(Path.home() / "go/bin/go"), "/usr/lib/go/bin/go"):
            if os.access(cand, os.X_OK):
                go = cand
                break
    if not go:
        raise ClusterError(
            f"go not found on PATH: install Go >= {MIN_GO[0]}.{MIN_GO[1]} (k8s.io/kubernetes "
            f"{TOOLSET[2].version()} needs it), e.g. from https://go.dev/dl/ or a package manager"
        )
    out = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, env=go_env()
    ).stdout.strip()
    m = re.match(r"go(\d+)\.(\d+)", out)
    if not m or (int(m.group(1)), int(m.group(2))) < MIN_GO:
        raise ClusterError(f"{go} is {out or 'unknown'}; need Go >= {MIN_GO[0]}.{MIN_GO[1]}")
    return go, out


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")  # never download a toolchain
    env.setdefault("GOFLAGS", "-mod=readonly")
    env.pop("GOOS", None)
    env.pop("GOARCH", None)
    env.setdefault("CGO_ENABLED", "0")
    return env


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_tool(tool: Tool, go: str) -> float:
    """Build one tool's binaries into its cache dir; returns seconds spent."""
    d = tool_dir(tool)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tool.name}-", dir=cache_root()))
    try:
        (tmp / "bin").mkdir()
        log(
            f"building {tool.name} {tool.version()} ({', '.join(tool.packages)}) "
            f"into {d} -- the first build takes minutes"
        )
        t0 = time.monotonic()
        cmd = [
            go,
            "build",
            "-trimpath",
            "-ldflags=" + " ".join(tool.ldflags()),
            "-o",
            str(tmp / "bin") + "/",
        ]
        pkgs = list(tool.packages.values())
        if pkgs == ["."]:
            cmd[-1] = str(tmp / "bin" / next(iter(tool.packages)))
        proc = subprocess.run([*cmd, *pkgs], cwd=tool.dir, env=go_env())
        if proc.returncode != 0:
            raise ClusterError(
                f"go build of {tool.name} failed (exit {proc.returncode}); see the output above"
            )
        if tool.copies:
            moddir = module_dir(tool, go)
            for dest, src in tool.copies:
                shutil.copytree(moddir / src, tmp / dest)
                for f in (tmp / dest).rglob("*"):  # the module cache is read-only
                    f.chmod(0o755 if f.is_dir() else 0o644)
                (tmp / dest).chmod(0o755)
        secs = time.monotonic() - t0
        (tmp / "stamp").write_text(tool.stamp() + "\n")
        (tmp / "build.json").write_text(
            json.dumps(
                {
                    "tool": tool.name,
                    "version": tool.version(),
                    "seconds": round(secs, 1),
                    "go": go_version(go),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
            + "\n"
        )
        if d.exists():
            shutil.rmtree(d)
        tmp.rename(d)
        log(f"built {tool.name} in {secs:.0f}s")
        return secs
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def module_dir(tool: Tool, go: str) -> Path:
    """Where the Go module cache holds the tool's pinned module (after a build)."""
    out = subprocess.run(
        [go, "list", "-m", "-json", tool.module],
        cwd=tool.dir,
        env=go_env(),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise ClusterError(f"go list -m {tool.module}: {out.stderr.strip()}")
    d = json.loads(out.stdout).get("Dir")
    if not d or not Path(d).is_dir():
        raise ClusterError(f"{tool.module} is not in the Go module cache (go mod download)")
    return Path(d)


def go_version(go: str) -> str:
    return subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, env=go_env()
    ).stdout.strip()


def link_bins() -> Path:
    b = bin_dir()
    b.mkdir(parents=True, exist_ok=True)
    for tool in TOOLSET:
        if not tool.linked:  # drop links an older build made
            for name in tool.packages:
                link = b / name
                if link.is_symlink() and os.readlink(link).startswith(str(tool_dir(tool))):
                    link.unlink()
            continue
        if not tool_is_built(tool):
            continue
        for name in tool.packages:
            target = tool_dir(tool) / "bin" / name
            link = b / name
            if link.is_symlink() and os.readlink(link) == str(target):
                continue
            tmp = b / f".{name}.tmp{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(target)
            tmp.replace(link)
    return b


def build(only: Sequence[str] = (), force: bool = False) -> Path:
    """Build whatever is missing (or everything with force); return the bin dir."""
    tools = [t for t in TOOLSET if not only or t.name in only]
    unknown = set(only) - {t.name for t in TOOLSET}
    if unknown:
        raise ClusterError(f"unknown tool(s) {sorted(unknown)}; known: {[t.name for t in TOOLSET]}")
    cache_root().mkdir(parents=True, exist_ok=True)
    with file_lock(cache_root() / ".build.lock"):
        missing = [t for t in tools if force or not tool_is_built(t)]
        if missing:
            go, _ = find_go()
            for tool in missing:
                build_tool(tool, go)
        return link_bins()


CLUSTER_TOOLS = ("etcd", "kwok", "kube")  # what `up` needs; helm is for the chart tests
REAL_NODE_TOOLS = (*CLUSTER_TOOLS, "cni", "coredns")  # what `up --real-node` needs


# ---------------------------------------------------------------------------
# Debian packages of the real node (`deps`)
# ---------------------------------------------------------------------------

# package -> a file it installs (present = installed; dpkg-query would also do,
# but a file is what the node really needs)
DEBIAN_PACKAGES: dict[str, str] = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "iptables": "/usr/sbin/iptables",
    "nftables": "/usr/sbin/nft",
    "conntrack": "/usr/sbin/conntrack",
    "iproute2": "/usr/sbin/ip",
    "mount": "/usr/bin/mount",
    "busybox-static": "/bin/busybox",  # the real-node test image (FROM scratch)
    "buildah": "/usr/bin/buildah",  # offline image builds (e2e/cluster images)
    "mmdebstrap": "/usr/bin/mmdebstrap",
    # the dashboard's browser tests (tests/unit/test_reporting_dashboard.py): Playwright
    # drives this Chromium (executable_path); it downloads no browser of its own
    "chromium": "/usr/bin/chromium",
    # promtool and a real Prometheus for the chart's rules and dashboard (tests)
    "prometheus": "/usr/bin/promtool",
}


def deb_cache() -> Path:
    return cache_root() / "debs"


def dpkg_installed(pkg: str) -> bool:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg], capture_output=True, text=True
    )
    return out.returncode == 0 and out.stdout.startswith("ii")


def missing_debian_packages() -> list[str]:
    return [p for p, f in DEBIAN_PACKAGES.items() if not (os.path.exists(f) or dpkg_installed(p))]


def install_deps() -> list[str]:
    """apt-get install what the real node needs and is missing; .debs cached in deb_cache().

    Returns the packages installed. Needs root (CI runs as root) and apt; the
    cached .debs make a fresh machine's install work from the cache.
    """
    missing = missing_debian_packages()
    if not missing:
        return []
    if not shutil.which("apt-get"):
        raise ClusterError(f"missing Debian packages {missing} and no apt-get to install them")
    if os.geteuid() != 0:
        raise ClusterError(f"missing Debian packages {missing}: run as root (apt-get install)")
    archives = deb_cache()
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    with file_lock(cache_root() / ".deps.lock"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        opts = [
            "-o",
            f"Dir::Cache::archives={archives}",
            "-o",
            "APT::Keep-Downloaded-Packages=1",
            "-o",
            "APT::Sandbox::User=root",  # the cache dir is root's
        ]
        log(f"installing Debian packages {missing} (.debs cached in {archives})")
        cmd = ["apt-get", *opts, "install", "-y", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env).returncode != 0:
            log("apt-get install failed; running apt-get update and trying again")
            subprocess.run(["apt-get", *opts, "update"], env=env, check=False)
            if subprocess.run(cmd, env=env).returncode != 0:
                raise ClusterError(f"apt-get install {' '.join(missing)} failed; see above")
    still = missing_debian_packages()
    if still:
        raise ClusterError(f"after apt-get install, still missing: {still}")
    return missing


def ensure_built(only: Sequence[str] = CLUSTER_TOOLS) -> Path:
    """Like build(), but fast when nothing is missing (no lock, no go)."""
    tools = [t for t in TOOLSET if t.name in only]
    if all(tool_is_built(t) for t in tools):
        b = bin_dir()
        if all((b / n).exists() for t in tools for n in t.packages):
            return b
    return build(only)


def regen_kube_gomod(version: str) -> None:
    """Rewrite e2e/tools/kube/go.mod for k8s.io/kubernetes `version` and tidy it."""
    go, _ = find_go()
    out = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        capture_output=True,
        text=True,
        env=go_env(),
        cwd=TOOLS / "kube",
    )
    if out.returncode != 0:
        raise ClusterError(f"go mod download k8s.io/kubernetes@{version}: {out.stderr}")
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/\S+", gomod, re.M)
    go_line = re.search(r"^go (\S+)", gomod, re.M)
    godebug = re.search(r"^godebug .*$", gomod, re.M)
    stage_ver = "v0." + version.lstrip("v").split(".", 1)[1]
    tools = TOOLSET[2].packages.values()
    lines = [
        f"// Generated by `e2e/build --regen-kube {version}` from k8s.io/kubernetes {version}'s",
        "// go.mod: k8s.io/kubernetes points its k8s.io/* staging modules at ./staging paths,",
        f"// so each one is replaced here by its published {stage_ver}. Do not edit by hand.",
        "module trialforge.local/e2e/tools/kube",
        "",
        f"go {go_line.group(1) if go_line else '1.26.0'}",
        "",
    ]
    if godebug:
        lines += [godebug.group(0), ""]
    lines += [
        "tool (",
        *[f"\t{p}" for p in tools],
        ")",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
    ]
    lines += [f"\t{m} => {m} {stage_ver}" for m in staging]
    lines += [")", ""]
    (TOOLS / "kube" / "go.mod").write_text("\n".join(lines))
    (TOOLS / "kube" / "go.sum").unlink(missing_ok=True)
    env = go_env()
    env["GOFLAGS"] = "-mod=mod"
    subprocess.run([go, "mod", "tidy"], cwd=TOOLS / "kube", env=env, check=True)
    log(f"rewrote {TOOLS / 'kube' / 'go.mod'} ({len(staging)} staging replaces)")


# ---------------------------------------------------------------------------
# Images of the real node (docker-archive tars, written with tarfile)
# ---------------------------------------------------------------------------

PAUSE_IMAGE = "trialforge.local/pause:1"
BUSYBOX_IMAGE = "trialforge.local/busybox:1"


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def docker_archive(
    out: Path,
    ref: str,
    files: dict[str, tuple[bytes, int]],
    symlinks: dict[str, str] | None = None,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
) -> str:
    """Write a one-layer image FROM scratch as a docker-archive tar (what
    `ctr images import` and `docker load` read); deterministic (mtime 0, sorted),
    so the same content gives the same digest. Returns the image id (sha256:...)."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        dirs = sorted({str(Path(p).parent) for p in [*files, *(symlinks or {})]} - {".", "/", ""})
        for d in dirs:
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            layer.addfile(info)
        for path, (data, mode) in sorted(files.items()):
            _tar_add(layer, path.lstrip("/"), data, mode)
        for path, target in sorted((symlinks or {}).items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
            layer.addfile(info)
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": list(entrypoint) or None,
            "Cmd": list(cmd) or None,
            "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "e2e/tfcluster.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    layer_name = f"{diff_id[7:]}/layer.tar"
    repo, _, tag = ref.rpartition(":")
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [ref], "Layers": [layer_name]}]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _tar_add(tar, f"{image_id}.json", config_bytes)
        _tar_add(tar, layer_name, layer_bytes)
        _tar_add(tar, "manifest.json", json.dumps(manifest).encode())
        _tar_add(tar, "repositories", json.dumps({repo: {tag: diff_id[7:]}}).encode())
    tmp.replace(out)
    return "sha256:" + image_id


def images_dir() -> Path:
    return cache_root() / "images"


def pause_image() -> Path:
    """The sandbox image (tools/pause, static): built once, cached by content."""
    build(["pause"])
    binary = tool_dir(next(t for t in TOOLSET if t.name == "pause")) / "bin" / "pause"
    out = images_dir() / "pause.tar"
    docker_archive(
        out, PAUSE_IMAGE, {"/pause": (binary.read_bytes(), 0o755)}, entrypoint=["/pause"]
    )
    return out


def busybox_image() -> Path:
    """The real-node test image: Debian's static busybox and a symlink per applet."""
    bb = Path("/bin/busybox")
    if not bb.is_file():
        install_deps()
    applets = subprocess.run([str(bb), "--list-full"], capture_output=True, text=True, check=True)
    links = {"/" + a: "/bin/busybox" for a in applets.stdout.split() if a and a != "bin/busybox"}
    out = images_dir() / "busybox.tar"
    docker_archive(
        out,
        BUSYBOX_IMAGE,
        {
            "/bin/busybox": (bb.read_bytes(), 0o755),
            "/etc/passwd": (b"root:x:0:0:root:/:/bin/sh\n", 0o644),
        },
        symlinks=links,
        cmd=["sh"],
    )
    return out


def archive_image(tar_path: Path) -> tuple[str, list[str]]:
    """(image id "sha256:<config digest>", RepoTags) of a docker-archive tar."""
    with tarfile.open(tar_path) as tar:
        f = tar.extractfile("manifest.json")
        if f is None:
            raise ClusterError(f"{tar_path}: no manifest.json (not a docker-archive)")
        manifest = json.load(f)
    if len(manifest) != 1:
        raise ClusterError(f"{tar_path}: {len(manifest)} images; expected one")
    config = manifest[0]["Config"]
    return "sha256:" + config.split("/")[-1].removesuffix(".json"), manifest[0].get(
        "RepoTags"
    ) or []


def containerd_load_image(address: str, tar_path: Path, name: str | None = None) -> str:
    """Import a docker-archive into containerd's k8s.io namespace (what the
    kubelet sees) as `name` (default: the archive's tag); nothing is done when
    the same image (by config digest) already has that name. Returns the image id."""
    image_id, tags = archive_image(tar_path)
    ref = name or (tags[0] if tags else None)
    if not ref:
        raise ClusterError(f"{tar_path} has no RepoTags; give the image a name")
    ctr = ["ctr", "--address", address, "-n", "k8s.io"]

    def current() -> dict[str, str]:
        out = subprocess.run([*ctr, "images", "ls"], capture_output=True, text=True, check=True)
        return {
            line.split()[0]: line.split()[2] for line in out.stdout.splitlines()[1:] if line.split()
        }

    imgs = current()
    if ref in imgs and image_id in imgs and imgs[ref] == imgs[image_id]:
        return image_id
    proc = subprocess.run([*ctr, "images", "import", str(tar_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"ctr images import {tar_path}: {proc.stderr.strip()}")
    imgs = current()
    if ref not in imgs or imgs[ref] != imgs.get(image_id):
        src = tags[0] if tags and tags[0] in imgs else image_id
        subprocess.run(
            [*ctr, "images", "tag", "--force", src, ref], capture_output=True, check=True
        )
    return image_id


# ---------------------------------------------------------------------------
# Processes and state
# ---------------------------------------------------------------------------


def state_root() -> Path:
    return E2E / ".state"


def default_state_dir(name: str) -> Path:
    env = os.environ.get("TRIALFORGE_CLUSTER_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return state_root() / name


def pid_alive(pid: int) -> bool:
    """True if pid runs (zombies, which hold no port or memory, count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def pid_start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def listening_ports(pids: set[int]) -> dict[int, list[int]]:
    """TCP ports in LISTEN state owned by these pids (from /proc, no ss needed)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes[link[8:-1]] = pid
    out: dict[int, list[int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # 0A = LISTEN
                    out.setdefault(inodes[parts[9]], []).append(int(parts[1].split(":")[1], 16))
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (its ephemeral range: kwokctl's own pick
    counts down from 32767 and races with other clusters started at the same time)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
                    return True
    return False


def kill_pids(pids: dict[int, str], grace: float = 5.0) -> list[int]:
    """SIGTERM, wait, SIGKILL; only pids whose start time still matches. Returns survivors."""
    live = {p: st for p, st in pids.items() if pid_alive(p) and pid_start_time(p) == st}
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in live):
        time.sleep(0.1)
    for p in live:
        if pid_alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(p) for p in live):
        time.sleep(0.1)
    return [p for p in live if pid_alive(p)]


@dataclass
class Cluster:
    """A cluster's state directory and what lives in it."""

    state_dir: Path
    name: str = DEFAULT_NAME

    @property
    def kwok_workdir(self) -> Path:
        return self.state_dir / "kwok"

    @property
    def kwok_name(self) -> str:
        """kwokctl's cluster name: as recorded at `up`, so --name may be omitted later."""
        recorded = self.read_state().get("kwok_name")
        return recorded or "tf-" + re.sub(r"[^a-z0-9-]", "-", self.name.lower())[:40]

    @property
    def cluster_dir(self) -> Path:
        return self.kwok_workdir / "clusters" / self.kwok_name

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def kwokctl_contexts(self) -> Path:
        """kwokctl adds/removes a context in this file (instead of ~/.kube/config)."""
        return self.state_dir / "kwokctl-contexts.kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_state(self, data: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_file)

    def component_pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in sorted((self.cluster_dir / "pids").glob("*.pid")):
            with contextlib.suppress(OSError, ValueError):
                out[f.stem] = int(f.read_text().strip())
        return out

    def kwokctl_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KWOK_WORKDIR"] = str(self.kwok_workdir)
        env.pop("KUBECONFIG", None)
        return env

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60, input_: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(bin_dir() / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input_)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    # -- lifecycle ---------------------------------------------------------

    def running(self) -> bool:
        st = self.read_state()
        pids = st.get("pids", {})
        if not pids or not self.kubeconfig.is_file():
            return False
        for info in [*pids.values(), *st.get("node_pids", {}).values()]:
            if not (pid_alive(info["pid"]) and pid_start_time(info["pid"]) == info["start"]):
                return False
        return self.kubectl("get", "--raw", "/readyz", check=False, timeout=10).returncode == 0

    def write_kwokctl_config(self, bins: Path, real_node: bool = False) -> Path:
        kv = TOOLSET[2].version()
        # with a real node, the API server also listens where pods reach it (the
        # bridge's gateway; tfnode fences the port to loopback and the bridge) and
        # its certificate names that address and the `kubernetes` Service IP
        port = self.read_state().get("apiserver_port") or free_port()
        ports = {
            "kubeApiserverPort": port,
            "etcdPort": free_port(),
            "etcdPeerPort": free_port(),
            "kubeControllerManagerPort": free_port(),
            "kubeSchedulerPort": free_port(),
            "kwokControllerPort": free_port(),
        }
        extra_options = "".join(f"  {k}: {v}\n" for k, v in ports.items())
        apiserver_patch = ""
        if real_node:
            import tfnode  # here: it imports this module

            extra_options += f"  kubeApiserverCertSANs: [{tfnode.GATEWAY}, {tfnode.SERVICE_IP}]\n"
            apiserver_patch = f"""\
- name: kube-apiserver
  extraArgs:
  - key: bind-address
    value: 0.0.0.0
    override: true
  - key: advertise-address
    value: {tfnode.GATEWAY}
  - key: kubelet-preferred-address-types
    value: InternalIP,Hostname
"""
        cfg = f"""\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: {kv}
  securePort: true
  kubeAuthorization: true
  kubeAdmission: true
  bindAddress: 127.0.0.1
{extra_options}  quietPull: true
  cacheDir: {self.kwok_workdir / "cache"}
  etcdBinary: {bins / "etcd"}
  kubeApiserverBinary: {bins / "kube-apiserver"}
  kubeControllerManagerBinary: {bins / "kube-controller-manager"}
  kubeSchedulerBinary: {bins / "kube-scheduler"}
  kubectlBinary: {bins / "kubectl"}
  kwokControllerBinary: {bins / "kwok"}
  components: [etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok-controller]
  # nothing optional, and nothing that would be downloaded
  enableMetricsServer: false
  prometheusPort: 0
  jaegerPort: 0
  dashboardPort: 0
componentsPatches:
# kwokctl's binary runtime lets kwok manage every node; we want only the nodes
# annotated kwok.x-k8s.io/node=fake (so the setup matches kwok in a real cluster)
- name: kwok-controller
  extraArgs:
  - key: manage-all-nodes
    value: "false"
    override: true
  - key: manage-nodes-with-annotation-selector
    value: kwok.x-k8s.io/node=fake
{apiserver_patch}"""
        path = self.state_dir / "kwokctl.yaml"
        path.write_text(cfg)
        return path

    def up(self, owner_pid: int | None = None, wait: float = 120, real_node: bool = False) -> float:
        t0 = time.monotonic()
        bins = ensure_built(REAL_NODE_TOOLS if real_node else CLUSTER_TOOLS)
        gc_stale(exclude=self.state_dir)
        if self.state_dir.exists():
            if self.running() and (not real_node or self.read_state().get("node")):
                log(f"cluster {self.name} already running ({self.kubeconfig})")
                if owner_pid:
                    self._start_watchdog(owner_pid)
                return 0.0
            log(f"cleaning a dead or partial cluster in {self.state_dir}")
            self.down(quiet=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.write_state(
            {
                "name": self.name,
                "kwok_name": self.kwok_name,
                "phase": "starting",
                "owner_pid": owner_pid,
                "creator_pid": os.getpid(),
                "real_node": real_node,
            }
        )
        if real_node:
            import tfnode

            install_deps()
            tfnode.RealNode.create_bridge()
            st = self.read_state()
            st["apiserver_port"] = free_port("0.0.0.0")
            self.write_state(st)
            tfnode.RealNode.fence_apiserver(st["apiserver_port"])
        cfg = self.write_kwokctl_config(bins, real_node=real_node)
        cmd = [
            str(bins / "kwokctl"),
            "create",
            "cluster",
            "--name",
            self.kwok_name,
            "--config",
            str(cfg),
            "--config",
            str(STAGES),
            "--kubeconfig",
            str(self.kwokctl_contexts),
            "--wait",
            f"{int(wait)}s",
            "--timeout",
            f"{int(wait)}s",
        ]
        proc = subprocess.run(
            cmd, env=self.kwokctl_env(), capture_output=True, text=True, timeout=wait + 60
        )
        (self.state_dir / "kwokctl-create.log").write_text(proc.stdout + proc.stderr)
        self._record_pids()
        if proc.returncode != 0:
            logs = self.tail_logs()
            self.down(quiet=True)
            raise ClusterError(
                f"kwokctl create cluster failed (exit {proc.returncode}):\n"
                f"{proc.stderr[-3000:]}\n{logs}"
            )
        src = self.cluster_dir / "kubeconfig.yaml"
        shutil.copyfile(src, self.kubeconfig)
        try:
            self._wait_ready(deadline=time.monotonic() + wait)
        except ClusterError:
            logs = self.tail_logs()
            self.down(quiet=True)
            raise ClusterError(f"cluster did not become ready:\n{logs}") from None
        if real_node:
            import tfnode

            try:
                tfnode.RealNode(self).up(wait=max(wait, 180))
            except (ClusterError, subprocess.TimeoutExpired) as e:
                logs = self.tail_logs()
                self.down(quiet=True)
                raise ClusterError(f"the real node did not start: {e}\n{logs}") from None
        st = self.read_state()
        st.update(
            phase="running",
            kubeconfig=str(self.kubeconfig),
            bin_dir=str(bins),
            up_seconds=round(time.monotonic() - t0, 2),
        )
        self.write_state(st)
        if owner_pid:
            self._start_watchdog(owner_pid)
        return time.monotonic() - t0

    def _record_pids(self) -> None:
        st = self.read_state()
        st["pids"] = {
            name: {"pid": pid, "start": pid_start_time(pid), "cmd": pid_cmdline(pid)}
            for name, pid in self.component_pids().items()
            if pid_alive(pid)
        }
        self.write_state(st)

    def _wait_ready(self, deadline: float) -> None:
        checks: list[tuple[str, list[str]]] = [
            ("apiserver /readyz", ["get", "--raw", "/readyz"]),
            ("scheduler lease", ["-n", "kube-system", "get", "lease", "kube-scheduler"]),
            (
                "controller-manager lease",
                ["-n", "kube-system", "get", "lease", "kube-controller-manager"],
            ),
            ("default service account", ["-n", "default", "get", "serviceaccount", "default"]),
        ]
        for what, args in checks:
            while True:
                if self.kubectl(*args, check=False, timeout=10).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"timed out waiting for {what}")
                dead = [
                    n
                    for n, i in self.read_state().get("pids", {}).items()
                    if not pid_alive(i["pid"])
                ]
                if dead:
                    raise ClusterError(f"component(s) exited: {', '.join(dead)}")
                time.sleep(0.2)

    def _start_watchdog(self, owner_pid: int) -> None:
        st = self.read_state()
        old = st.get("watchdog")
        if old and pid_alive(old["pid"]) and pid_start_time(old["pid"]) == old["start"]:
            if old.get("owner_pid") == owner_pid:
                return
            kill_pids({old["pid"]: old["start"]})
        logf = open(self.state_dir / "watchdog.log", "a")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--dir",
                str(self.state_dir),
                "--name",
                self.name,
                "_watchdog",
                "--owner-pid",
                str(owner_pid),
            ],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
            close_fds=True,
        )
        logf.close()
        st["owner_pid"] = owner_pid
        st["watchdog"] = {
            "pid": proc.pid,
            "start": pid_start_time(proc.pid),
            "owner_pid": owner_pid,
        }
        self.write_state(st)

    def down(self, quiet: bool = False, keep_watchdog: bool = False) -> float:
        """Stop everything this cluster started and remove its state dir."""
        t0 = time.monotonic()
        kueue_down(self)  # first, while the apiserver still answers it
        st = self.read_state()
        left: list[str] = []
        if st.get("real_node") or st.get("node_pids"):
            import tfnode  # here: it imports this module

            left = tfnode.RealNode(self).down()
        procs: dict[int, str] = {i["pid"]: i["start"] for i in st.get("pids", {}).values()}
        # pids kwokctl wrote that we may not have recorded yet (crash during up)
        for pid in self.component_pids().values():
            if pid not in procs and pid_alive(pid) and str(self.cluster_dir) in pid_cmdline(pid):
                procs[pid] = pid_start_time(pid)
        kwokctl = bin_dir() / "kwokctl"
        if self.cluster_dir.exists() and kwokctl.exists():
            self.kwokctl_contexts.touch()
            proc = subprocess.run(
                [
                    str(kwokctl),
                    "delete",
                    "cluster",
                    "--name",
                    self.kwok_name,
                    "--kubeconfig",
                    str(self.kwokctl_contexts),
                ],
                env=self.kwokctl_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            if proc.returncode != 0 and not quiet:
                log(f"kwokctl delete cluster: {proc.stderr.strip()[-500:]}")
        survivors = kill_pids(procs)
        wd = st.get("watchdog")
        if wd and not keep_watchdog and wd["pid"] != os.getpid():
            kill_pids({wd["pid"]: wd["start"]}, grace=2)
        if survivors:
            raise ClusterError(f"processes would not die: {survivors}")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if left:
            raise ClusterError("the real node left behind: " + "; ".join(left))
        secs = time.monotonic() - t0
        if not quiet:
            log(f"cluster {self.name} down in {secs:.1f}s")
        return secs

    def status(self) -> dict:
        st = self.read_state()
        comps = {}
        for name, info in st.get("pids", {}).items():
            pid = info["pid"]
            alive = pid_alive(pid) and pid_start_time(pid) == info["start"]
            comps[name] = {
                "pid": pid,
                "alive": alive,
                "ports": sorted(listening_ports({pid}).get(pid, [])) if alive else [],
            }
        if st.get("kueue"):
            pid = st["kueue"]["pid"]
            alive = kueue_alive(self)
            comps["kueue"] = {
                "pid": pid,
                "alive": alive,
                "ports": sorted(listening_ports({pid}).get(pid, [])) if alive else [],
            }
        return {
            "name": self.name,
            "state_dir": str(self.state_dir),
            "kubeconfig": str(self.kubeconfig) if self.kubeconfig.exists() else None,
            "bin_dir": str(bin_dir()),
            "running": self.running() if st else False,
            "owner_pid": st.get("owner_pid"),
            "components": comps,
        }

    def tail_logs(self, lines: int = 15) -> str:
        out = []
        for f in [
            *sorted((self.cluster_dir / "logs").glob("*.log")),
            *sorted((self.state_dir / "node" / "logs").glob("*.log")),
        ]:
            text = f.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {f.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)

    # -- nodes -------------------------------------------------------------

    def create_gpu_nodes(
        self,
        count: int,
        gpus: int = 8,
        prefix: str = "kwok-gpu-",
        product: str = "NVIDIA-H100-80GB-HBM3",
        cpu: str = "96",
        memory: str = "1Ti",
        pods: str = "110",
        start: int = 0,
    ) -> list[str]:
        docs = []
        names = []
        for i in range(start, start + count):
            name = f"{prefix}{i}"
            names.append(name)
            docs.append(
                gpu_node_manifest(
                    name, gpus=gpus, product=product, cpu=cpu, memory=memory, pods=pods
                )
            )
        self.kubectl(
            "apply",
            "-f",
            "-",
            input_=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        )
        self.kubectl(
            "wait",
            "--for=condition=Ready",
            "--timeout=60s",
            *[f"node/{n}" for n in names],
            timeout=90,
        )
        return names


def gpu_node_manifest(
    name: str,
    gpus: int = 8,
    product: str = "NVIDIA-H100-80GB-HBM3",
    cpu: str = "96",
    memory: str = "1Ti",
    pods: str = "110",
) -> dict:
    """A kwok-managed Node with nvidia.com/gpu capacity (no taint: kwok-only cluster)."""
    res = {
        "cpu": cpu,
        "memory": memory,
        "pods": pods,
        "nvidia.com/gpu": str(gpus),
        "ephemeral-storage": "1Ti",
    }
    h = hashlib.sha256(name.encode()).digest()
    ip = f"10.{240 + h[0] % 16}.{h[1]}.{1 + h[2] % 254}"  # stable per node name
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": f"gpu-{gpus}x",
                "nvidia.com/gpu.present": "true" if gpus else "false",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": str(gpus),
            },
        },
        "spec": {},
        "status": {
            "capacity": res,
            "allocatable": res,
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
        },
    }


# ---------------------------------------------------------------------------
# Kueue (`up --kueue`): the controller manager as a local process
# ---------------------------------------------------------------------------

KUEUE_NAMESPACE = "kueue-system"
KUEUE_SERVICE = "kueue-webhook-service"  # only named in certificates, never created
KUEUE_SECRET = "kueue-webhook-server-cert"
# The CRDs Kueue's internal cert management injects its CA into (pkg/util/cert): each
# must have a conversion webhook clientConfig, or the injection fails and Kueue never
# becomes ready. Only v1beta2, the storage version, is ever used, so no conversion
# is ever asked for.
KUEUE_CONVERSION_CRDS = (
    "localqueues.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
    "cohorts.kueue.x-k8s.io",
    "multikueueclusters.kueue.x-k8s.io",
)
KUEUE_TOOLS = (*CLUSTER_TOOLS, "kueue")


def kueue_tool() -> Tool:
    return next(t for t in TOOLSET if t.name == "kueue")


def _kueue_port() -> int:
    """A free loopback port (main's free_port(host) does the same once merged)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kueue_config(certs: Path, webhook_port: int, health_port: int) -> str:
    """Kueue's Configuration for a local process: everything on loopback, no leader
    election, no metrics or visibility server, only batch/v1 Jobs managed."""
    return f"""\
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: {KUEUE_NAMESPACE}
health:
  healthProbeBindAddress: 127.0.0.1:{health_port}
metrics:
  bindAddress: "0"
webhook:
  host: 127.0.0.1
  port: {webhook_port}
  certDir: {certs}
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: true
  webhookServiceName: {KUEUE_SERVICE}
  webhookSecretName: {KUEUE_SECRET}
manageJobsWithoutQueueName: false
clientConnection:
  qps: 50
  burst: 100
integrations:
  frameworks:
  - batch/job
featureGates:
  VisibilityOnDemand: false
  MultiKueue: false
"""


def kueue_alive(c: Cluster) -> bool:
    info = c.read_state().get("kueue")
    return bool(info) and pid_alive(info["pid"]) and pid_start_time(info["pid"]) == info["start"]


def kueue_log(c: Cluster, lines: int = 40) -> str:
    try:
        text = (c.state_dir / "kueue" / "kueue.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no kueue log)"
    return "\n".join(text[-lines:])


def kueue_up(c: Cluster, wait: float = 120) -> float:
    """Install Kueue's CRDs and start its manager against the running cluster.

    No cert-manager and no webhooks: Kueue's internal cert management makes its
    certificates into a Secret, which this function copies into the certDir (the
    kubelet's part for a pod); its webhook server listens on loopback, but no
    Validating/MutatingWebhookConfiguration points at it, so the apiserver never
    calls it. Without its defaulting webhook, a Job must come with
    ``spec.suspend: true`` and the ``kueue.x-k8s.io/queue-name`` label itself.
    Returns seconds spent (0 when it already runs)."""
    if kueue_alive(c):
        return 0.0
    t0 = time.monotonic()
    ensure_built(KUEUE_TOOLS)
    tool = kueue_tool()
    binary = tool_dir(tool) / "bin" / "kueue"
    crds = tool_dir(tool) / "crds"
    kdir = c.state_dir / "kueue"
    if kdir.exists():
        shutil.rmtree(kdir)
    certs = kdir / "certs"
    certs.mkdir(parents=True)
    ns_and_secret = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUEUE_NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": KUEUE_SECRET, "namespace": KUEUE_NAMESPACE},
            },
        ],
    }
    c.kubectl("apply", "-f", "-", input_=json.dumps(ns_and_secret))
    applied = c.kubectl(
        "apply", "--server-side", "--force-conflicts", "-o", "name", "-f", str(crds), timeout=120
    ).stdout.split()
    conversion = {
        "spec": {
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "service": {
                            "namespace": KUEUE_NAMESPACE,
                            "name": KUEUE_SERVICE,
                            "path": "/convert",
                        }
                    },
                    "conversionReviewVersions": ["v1"],
                },
            }
        }
    }
    for crd in KUEUE_CONVERSION_CRDS:
        c.kubectl("patch", "crd", crd, "--type=merge", "-p", json.dumps(conversion))
    c.kubectl("wait", "--for=condition=Established", "--timeout=60s", *applied, timeout=90)
    webhook_port, health_port = _kueue_port(), _kueue_port()
    cfg = kdir / "config.yaml"
    cfg.write_text(kueue_config(certs, webhook_port, health_port))
    env = dict(os.environ, KUBECONFIG=str(c.kubeconfig))
    logf = open(kdir / "kueue.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(binary), f"--config={cfg}", "--zap-log-level=info"],
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=logf,
        env=env,
        cwd=kdir,
        start_new_session=True,
        close_fds=True,
    )
    logf.close()
    st = c.read_state()
    st["kueue"] = {
        "pid": proc.pid,
        "start": pid_start_time(proc.pid),
        "cmd": pid_cmdline(proc.pid),
        "webhook_port": webhook_port,
        "health_port": health_port,
    }
    c.write_state(st)
    deadline = time.monotonic() + wait
    try:
        _kueue_wait_ready(c, proc, certs, health_port, deadline)
    except ClusterError:
        kueue_down(c)
        raise
    return time.monotonic() - t0


def _kueue_wait_ready(
    c: Cluster, proc: subprocess.Popen[bytes], certs: Path, health_port: int, deadline: float
) -> None:
    import urllib.error
    import urllib.request

    while True:
        if proc.poll() is not None:
            raise ClusterError(f"kueue exited with {proc.returncode}:\n{kueue_log(c)}")
        if not (certs / "tls.crt").exists():
            out = c.kubectl(
                "-n", KUEUE_NAMESPACE, "get", "secret", KUEUE_SECRET, "-o", "json",
                check=False, timeout=10,
            )  # fmt: skip
            data = (json.loads(out.stdout).get("data") or {}) if out.returncode == 0 else {}
            if data.get("tls.crt") and data.get("tls.key"):
                import base64

                for key in ("ca.crt", "tls.key", "tls.crt"):  # Kueue waits for tls.crt
                    f = certs / key
                    tmp = f.with_suffix(".tmp")
                    tmp.write_bytes(base64.b64decode(data[key]))
                    tmp.chmod(0o600)
                    tmp.replace(f)
        else:
            try:
                url = f"http://127.0.0.1:{health_port}/readyz"
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
        if time.monotonic() > deadline:
            raise ClusterError(f"kueue did not become ready:\n{kueue_log(c)}")
        time.sleep(0.2)


def kueue_down(c: Cluster) -> None:
    """Stop the Kueue manager (its objects go with the cluster's etcd)."""
    st = c.read_state()
    info = st.pop("kueue", None)
    if info:
        survivors = kill_pids({info["pid"]: info["start"]})
        if survivors:
            raise ClusterError(f"kueue (pid {info['pid']}) would not die")
    if c.state_file.exists():
        c.write_state(st)


def gc_stale(exclude: Path | None = None) -> list[Path]:
    """Stop clusters under e2e/.state whose owner process has died."""
    reaped = []
    root = state_root()
    if not root.is_dir():
        return reaped
    for d in sorted(root.iterdir()):
        if not d.is_dir() or (exclude and d.resolve() == exclude.resolve()):
            continue
        try:
            st = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            continue
        owner = st.get("owner_pid")
        if owner and not pid_alive(owner):
            log(f"reaping stale cluster {d} (owner pid {owner} is gone)")
            with contextlib.suppress(ClusterError, OSError, subprocess.SubprocessError):
                Cluster(d, st.get("name", d.name)).down(quiet=True)
            reaped.append(d)
    return reaped


def watchdog(cluster: Cluster, owner_pid: int) -> None:
    """Stop the cluster when its owner (e.g. a killed pytest) is gone."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        if not cluster.state_file.exists():
            return
        if not pid_alive(owner_pid):
            log(f"owner pid {owner_pid} is gone: stopping cluster {cluster.name}")
            cluster.down(quiet=True, keep_watchdog=True)
            return
        time.sleep(1)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main_build(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="e2e/build",
        description="Build the control-plane binaries (etcd, kwok, kwokctl, kube-apiserver, "
        "kube-controller-manager, kube-scheduler, kubectl, helm) from the Go modules pinned in "
        "e2e/tools/*/go.mod into the cache (~/.cache/trialforge or $TRIALFORGE_CACHE); only "
        "what is missing or whose pins changed is rebuilt. Prints the bin dir.",
    )
    p.add_argument(
        "tools", nargs="*", help="only these tools (etcd kwok kube helm cni coredns pause kueue)"
    )
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--list", action="store_true", help="show tools, versions, cache state")
    p.add_argument(
        "--regen-kube",
        metavar="VERSION",
        help="regenerate e2e/tools/kube/go.mod for another k8s.io/kubernetes version",
    )
    a = p.parse_args(argv)
    try:
        if a.regen_kube:
            regen_kube_gomod(a.regen_kube)
            return 0
        if a.list:
            for t in TOOLSET:
                state = "built" if tool_is_built(t) else "missing"
                print(f"{t.name:5} {t.module:28} {t.version():9} {state:8} {tool_dir(t)}")
            return 0
        print(build(a.tools, force=a.force))
        return 0
    except ClusterError as e:
        print(f"e2e/build: error: {e}", file=sys.stderr)
        return 1


REAL_NODE_CMDS = ("deps",)


def add_real_node_cli(sub: argparse._SubParsersAction, build_p: argparse.ArgumentParser) -> None:
    """The real node's part of the CLI (kept apart so other subcommands merge easily)."""
    build_p.add_argument(
        "--real-node",
        action="store_true",
        help="also install the real node's Debian packages (deps) and build cni, coredns",
    )
    deps = sub.add_parser(
        "deps",
        help="apt-get install the real node's Debian packages that are missing "
        "(.debs cached in ~/.cache/trialforge/debs)",
    )
    deps.add_argument(
        "--check", action="store_true", help="only list what is missing; exit 1 if any"
    )


def run_real_node_cmd(a: argparse.Namespace) -> int:
    if a.cmd == "deps":
        if a.check:
            missing = missing_debian_packages()
            for p in missing:
                print(p)
            return 1 if missing else 0
        for p in install_deps():
            print(p)
        return 0
    raise ClusterError(f"unknown command {a.cmd}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="e2e/cluster",
        description="A real local Kubernetes control plane for Trialforge's tests: etcd, "
        "kube-apiserver (TLS, RBAC, admission), kube-controller-manager, kube-scheduler and "
        "kwok (fake nodes, scripted pod lifecycles), built from Go modules and run by kwokctl "
        "with --runtime binary. See e2e/README.md.",
    )
    p.add_argument(
        "--name",
        default=None,
        help=f"cluster name (default $TRIALFORGE_CLUSTER_NAME, the name recorded in "
        f"--dir, or {DEFAULT_NAME})",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="state dir (default $TRIALFORGE_CLUSTER_DIR or e2e/.state/<name>)",
    )
    sub = p.add_subparsers(
        dest="cmd",
        required=True,
        metavar="{up,down,status,env,kubeconfig,build,nodes,gc,logs,deps,images}",
    )
    images = sub.add_parser(
        "images",
        add_help=False,
        help="build trialforge/operator:dev and trialforge/trainer:dev from images/ with "
        "buildah, no Docker (`e2e/cluster images --help`: e2e/tfimages.py)",
    )
    del images  # its arguments are tfimages.py's, handed over as they are
    build_p = sub.add_parser("build", help="build missing binaries; print the bin dir")
    add_real_node_cli(sub, build_p)
    up = sub.add_parser("up", help="build what is missing, start the cluster, print kubeconfig")
    up.add_argument(
        "--owner-pid",
        type=int,
        default=None,
        help="stop the cluster automatically when this process exits",
    )
    up.add_argument(
        "--real-node",
        action="store_true",
        help="also start the real node real-0 (containerd, kubelet, CNI, CoreDNS, kube-proxy); "
        "needs root",
    )
    up.add_argument("--nodes", type=int, default=0, help="create this many GPU nodes")
    up.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    up.add_argument("--timeout", type=float, default=120, help="seconds to wait (default 120)")
    up.add_argument(
        "--kueue",
        action="store_true",
        help="also install Kueue's CRDs and run its controller manager (no webhooks); "
        "on a running cluster, only that",
    )
    sub.add_parser("down", help="stop everything the cluster started, remove its state")
    sub.add_parser("status", help="print the cluster's components as JSON; exit 1 if not up")
    sub.add_parser("env", help="print `export KUBECONFIG=...; export PATH=...` for eval")
    sub.add_parser("kubeconfig", help="print the kubeconfig path")
    nodes = sub.add_parser("nodes", help="create N kwok GPU nodes")
    nodes.add_argument("count", type=int)
    nodes.add_argument("--gpus", type=int, default=8)
    nodes.add_argument("--prefix", default="kwok-gpu-")
    nodes.add_argument("--start", type=int, default=0, help="first node index")
    nodes.add_argument("--product", default="NVIDIA-H100-80GB-HBM3")
    nodes.add_argument("--cpu", default="96")
    nodes.add_argument("--memory", default="1Ti")
    sub.add_parser("gc", help="stop clusters under e2e/.state whose owner process died")
    logs = sub.add_parser("logs", help="print the tail of every component's log")
    logs.add_argument("-n", type=int, default=30)
    wd = sub.add_parser("_watchdog")
    wd.add_argument("--owner-pid", type=int, required=True)
    a, rest = p.parse_known_args(argv)
    if rest and a.cmd != "images":
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    name = a.name or os.environ.get("TRIALFORGE_CLUSTER_NAME")
    if not name and a.dir:
        name = Cluster(a.dir.expanduser().resolve()).read_state().get("name")
    name = name or DEFAULT_NAME
    state_dir = a.dir.expanduser().resolve() if a.dir else default_state_dir(name)
    c = Cluster(state_dir, name)
    if a.cmd == "images":
        import tfimages  # here: it imports this module

        return tfimages.main(rest)
    try:
        if a.cmd in REAL_NODE_CMDS:
            return run_real_node_cmd(a)
        if a.cmd == "build":
            if a.real_node:
                install_deps()
            print(build())
        elif a.cmd == "up":
            secs = c.up(owner_pid=a.owner_pid, wait=a.timeout, real_node=a.real_node)
            if a.kueue:
                ksecs = kueue_up(c, wait=a.timeout)
                if ksecs:
                    log(f"kueue up in {ksecs:.1f}s")
                secs += ksecs
            if a.nodes:
                c.create_gpu_nodes(a.nodes, gpus=a.gpus)
            log(f"cluster {c.name} up in {secs:.1f}s; try: eval $({sys.argv[0]} env)")
            print(c.kubeconfig)
        elif a.cmd == "down":
            if not state_dir.exists():
                log(f"no cluster in {state_dir}")
                return 0
            c.down()
        elif a.cmd == "status":
            s = c.status()
            print(json.dumps(s, indent=2))
            return 0 if s["running"] else 1
        elif a.cmd == "env":
            if not c.kubeconfig.exists():
                raise ClusterError(f"no cluster in {state_dir}; run e2e/cluster up first")
            print(f"export KUBECONFIG={c.kubeconfig}; export PATH={bin_dir()}:$PATH")
        elif a.cmd == "kubeconfig":
            print(c.kubeconfig)
        elif a.cmd == "nodes":
            if not c.running():
                raise ClusterError(f"no running cluster in {state_dir}")
            for n in c.create_gpu_nodes(
                a.count,
                gpus=a.gpus,
                prefix=a.prefix,
                start=a.start,
                product=a.product,
                cpu=a.cpu,
                memory=a.memory,
            ):
                print(n)
        elif a.cmd == "gc":
            for d in gc_stale():
                print(d)
        elif a.cmd == "logs":
            print(c.tail_logs(a.n))
        elif a.cmd == "_watchdog":
            watchdog(c, a.owner_pid)
        return 0
    except ClusterError as e:
        print(f"e2e/cluster: error: {e}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as e:
        print(f"e2e/cluster: error: timed out: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
