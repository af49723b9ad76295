"""Access to the NoETL sample bodies kept in the repository (`spec/samples/`)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "spec" / "samples"


def sample_path(name: str) -> Path:
    """Path of a sample by file name; `.json` is added when no suffix is given."""
    path = SAMPLES_DIR / name
    if not path.suffix:
        path = path.with_suffix(".json")
    return path


def sample_bytes(name: str) -> bytes:
    """The exact bytes of a sample file."""
    return sample_path(name).read_bytes()
