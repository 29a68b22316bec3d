"""Every shipped weights file is in the assets manifest with what made it, and its sha256 matches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cvg_bench

ASSETS = Path(cvg_bench.__file__).resolve().parent / "assets"


def test_manifest_covers_every_weights_file_and_hashes_match():
    manifest = json.loads((ASSETS / "MANIFEST.json").read_text())
    listed = {}
    for entry in manifest["assets"]:
        assert entry["what"] and entry["command"] and isinstance(entry["seed"], int), entry["path"]
        listed.update(entry["files"])
    on_disk = {str(p.relative_to(ASSETS)) for p in ASSETS.rglob("*.safetensors")}
    assert set(listed) == on_disk
    for rel, info in listed.items():
        data = (ASSETS / rel).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], rel
