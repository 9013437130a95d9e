"""A regular (non-editable) install must carry every module and every data file the code reads at run time."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIRS: dict[str, str] = CONFIG["package-dir"]


def _package_folders() -> dict[str, Path]:
    """Every folder with an __init__.py under the mapped top-level folders, by dotted package name."""
    out: dict[str, Path] = {}
    for dotted, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            out[".".join([dotted, *rel.parts])] = init.parent
    return out


def test_every_package_is_listed() -> None:
    missing = sorted(set(_package_folders()) - set(CONFIG["packages"]))
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_data_file_is_packaged() -> None:
    folders = _package_folders()
    data = CONFIG["package-data"]
    unpackaged = []
    for dotted, folder in folders.items():
        patterns = data.get("*", []) + data.get(dotted, [])
        packaged = {match for pattern in patterns for match in folder.glob(pattern)}  # setuptools' glob semantics
        for path in folder.rglob("*"):
            if path.is_dir() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
                continue
            owner = next(p for p in path.parents if (p / "__init__.py").exists())
            if owner != folder:
                continue  # a sub-package's file: checked under that package
            if path not in packaged:
                unpackaged.append(f"{dotted}: {path.relative_to(folder).as_posix()}")
    assert not unpackaged, f"add package-data patterns in pyproject.toml for: {unpackaged}"
