"""What a model *is*, by content: the identity that caches and artifact keys use.

A path says where weights are, not what they are: the same model moved to another cache or
machine must keep its cached answers and the students trained with it, and a student
re-exported into the same directory must not inherit the old student's answers. So a local
model is named by the SHA-256 of its files, a GGUF shipped in a package by the SHA-256 of that
file (without converting it), and a hub model by its id (the hub pins content by revision).

Hashing a 500 MB directory takes about a second; the result is remembered in a small sidecar
file (``lmcot_fingerprint.json``) together with the files' sizes and modification times, so it
is recomputed only when a file changes.
"""

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

SIDECAR = "lmcot_fingerprint.json"
GGUF_REF = re.compile(r"^\$\{gguf_model:\s*([^,\s]+)\s*,\s*([^,\s]+)\s*,.*\}$")


def _sha256_files(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:16]


def _stat(root: Path, files: list[Path]) -> list:
    return [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def path_fingerprint(path: str | Path) -> str:
    """Content hash of a file, or of every file under a directory (our own ``lmcot_*`` markers
    and manifests excluded: they describe the model, they are not the model)."""
    root = Path(path).resolve()
    if root.is_file():
        return _file_fingerprint(str(root), *_stat(root.parent, [root])[0][1:])
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith(("lmcot_", "."))
    )
    stat = _stat(root, files)
    sidecar = root / SIDECAR
    try:
        known = json.loads(sidecar.read_text())
        if known["files"] == stat:
            return known["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    sha = _sha256_files(root, files)
    try:
        sidecar.write_text(json.dumps({"sha256": sha, "files": stat}))
    except OSError:  # a read-only model directory: recompute next time
        pass
    return sha


@lru_cache(maxsize=64)
def _file_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    return _sha256_files(Path(path).parent, [Path(path)])


def model_fingerprint(ref: str) -> str:
    """Identity of a model reference as a config writes it, *before* interpolation.

    ``${gguf_model:PKG,FILE,...}`` names the GGUF file's content (no conversion is triggered),
    an existing local path its files' content, anything else is a hub id and names itself.

    >>> model_fingerprint("google/flan-t5-small")
    'hub:google/flan-t5-small'
    """
    ref = str(ref)
    if match := GGUF_REF.match(ref):
        from lmcot.lm.gguf import package_file

        package, filename = match.groups()
        return f"gguf:{filename}:{path_fingerprint(package_file(package, filename))}"
    if Path(ref).exists():
        return f"{Path(ref).name}:{path_fingerprint(ref)}"
    return f"hub:{ref}"
