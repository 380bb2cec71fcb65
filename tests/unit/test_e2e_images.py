"""e2e/tfcluster.py's docker-archive writer (the real node's pause and busybox images)."""

import json
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))
import tfcluster  # noqa: E402


def write(tmp_path: Path, name: str, data: bytes = b"#!/bin/sh\n") -> tuple[Path, str]:
    out = tmp_path / name
    image_id = tfcluster.docker_archive(
        out,
        "trialforge.local/x:1",
        {"/bin/x": (data, 0o755)},
        symlinks={"/bin/y": "/bin/x"},
        entrypoint=["/bin/x"],
    )
    return out, image_id


def test_archive_is_deterministic_and_readable(tmp_path):
    a, id_a = write(tmp_path, "a.tar")
    b, id_b = write(tmp_path, "b.tar")
    assert a.read_bytes() == b.read_bytes()
    assert id_a == id_b and id_a.startswith("sha256:")
    assert tfcluster.archive_image(a) == (id_a, ["trialforge.local/x:1"])
    _, id_c = write(tmp_path, "c.tar", b"other")
    assert id_c != id_a


def test_archive_layout(tmp_path):
    out, image_id = write(tmp_path, "a.tar")
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        config = json.load(tar.extractfile(manifest[0]["Config"]))
        with tarfile.open(fileobj=tar.extractfile(manifest[0]["Layers"][0])) as layer:
            members = {m.name: m for m in layer.getmembers()}
    assert manifest[0]["Config"] == image_id.removeprefix("sha256:") + ".json"
    assert config["config"]["Entrypoint"] == ["/bin/x"]
    assert len(config["rootfs"]["diff_ids"]) == 1
    assert members["bin"].isdir()
    assert members["bin/x"].mode == 0o755
    assert members["bin/y"].issym() and members["bin/y"].linkname == "/bin/x"
