"""A team's project folder as the tests lay it out: settings naming the manifest folder, and the
manifest in it (each test adds its model files and data)."""

from __future__ import annotations

from pathlib import Path


def team_project(root: Path, manifest_name: str, manifest: str) -> Path:
    """``root`` with a pyproject.toml that names ``manifests/``, and the manifest written there;
    returns the manifest folder."""
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nmlscope_manifests = ["manifests"]\n'
    )
    manifests = root / "manifests"
    manifests.mkdir()
    (manifests / manifest_name).write_text(manifest)
    return manifests
