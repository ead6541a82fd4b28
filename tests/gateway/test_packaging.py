"""The wheel installs one package, ``qgate``, and works from a folder with its own ``core/``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.serve import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("core", "storage", "gateway", "protocols", "twisted"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("qgate-*.whl")
    return found


def test_the_wheel_holds_only_qgate_and_the_twisted_plugin(wheel: Path) -> None:
    tops = {
        name.split("/", 1)[0]
        for name in zipfile.ZipFile(wheel).namelist()
        if not name.split("/", 1)[0].endswith(".dist-info")
    }
    assert tops == {"qgate", "twisted"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "qgate/storage/sql/migrations/versions/0001_initial.py" in names
    assert "qgate/protocols/avro/qgate.avpr" in names
    assert "twisted/plugins/qgate_plugin.py" in names


def test_an_installed_qgate_imports_beside_a_foreign_core_folder(
    wheel: Path, tmp_path: Path
) -> None:
    """A fresh venv holds only the wheel; the dependencies come from this venv's
    site-packages on PYTHONPATH (a path there runs no .pth, so no editable finder)."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(purelib)
    deps = sysconfig.get_paths()["purelib"]
    work = tmp_path / "work"
    (work / "core").mkdir(parents=True)
    (work / "core" / "__init__.py").write_text("raise ImportError('the wrong core')\n")
    (work / "gateway").mkdir()
    (work / "gateway" / "__init__.py").write_text("raise ImportError('the wrong gateway')\n")
    script = (
        "import qgate.gateway.app, qgate.storage.sql.store, qgate.protocols.stomp\n"
        "from qgate.storage.sql.migrate import MIGRATIONS\n"
        "assert (MIGRATIONS / 'versions').is_dir()\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "assert 'qgate' in [p.tapname for p in getPlugins(IServiceMaker)]\n"
        "print(qgate.gateway.app.__file__)\n"
    )
    result = subprocess.run(
        [python, "-c", script],
        cwd=work,
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(purelib)
    cli = subprocess.run(
        [python, "-m", "qgate.gateway.cli", "--help"],
        cwd=work,
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert "serve" in cli.stdout
