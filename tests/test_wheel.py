"""The built distribution works on its own: sdist -> wheel -> a fresh venv -> `unlearn`.

What is tested: an sdist is built from a copy of the checkout (its top-level files and
``src/``), a wheel is built from the unpacked sdist (so the sdist holds what a build
needs), and the wheel is installed into a fresh venv under a temporary folder. From that
venv, ``unlearn methods``, ``unlearn bench --check`` on the built-in default scenario (a
package-data file, ``unlearn/bench/scenarios/*.yaml``) and the README's first Python
example must run, and ``unlearn`` must import from the fresh venv, not from ``src/``.

How the dependencies get into the fresh venv: by default they are not installed from the
registry. The venv is created without them, the wheel is installed with ``pip install
--no-deps``, and then a ``.pth`` file in the fresh venv's site-packages appends the main
venv's site-packages to ``sys.path``, after the fresh site-packages, so the wheel's own
``unlearn`` is found first. A plain path line in a ``.pth`` file does not process the
``.pth`` files of the folder it adds, so the editable install of the main venv (its
``__editable__.*.pth``, which puts ``src/`` on the path) stays inactive; the test checks
``unlearn.__file__`` and ``sys.path`` to be sure. The wheel is installed before the ``.pth``
is written, so pip sees a bare venv and never touches the main venv.

Why: measured on this machine (2 busy cores, warm pip cache, torch's CPU wheel on local
disk), a full ``pip install`` of the wheel with its dependencies (torch, scipy,
scikit-learn, matplotlib, optuna, ...) took 107 s with bytecode compilation, and this test
with ``UNLEARN_WHEEL_FULL_INSTALL=1`` (the full install, ``--no-compile``) 64 s against
36 s by default, with twice the CPU time and 1.3 GB of disk per run. Where the CPU build
of torch is not on local disk, a full install would fetch torch from the registry (a
multi-GB CUDA build). So the default needs no registry; set ``UNLEARN_WHEEL_FULL_INSTALL=1``
to install the dependencies from the registry instead.

The build uses the PEP 517 backend of ``pyproject.toml`` (setuptools) from the running
interpreter, without build isolation: no network for the build and no stray ``build/``
or ``*.egg-info`` in the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "unlearn"
SCENARIOS = sorted(p.name for p in (PACKAGE / "bench" / "scenarios").glob("*.yaml"))
DIST_NAME = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
WHEEL_STEM = re.sub(r"[-_.]+", "_", DIST_NAME).lower()
FULL_INSTALL = os.environ.get("UNLEARN_WHEEL_FULL_INSTALL") == "1"
TIMEOUT = 600 if FULL_INSTALL else 300

BACKEND = """
import sys
from setuptools import build_meta
kind, out = sys.argv[1], sys.argv[2]
build = build_meta.build_sdist if kind == "sdist" else build_meta.build_wheel
print(build(out))
"""


def _env() -> dict[str, str]:
    """The environment without anything that would point Python at the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(cmd: list, cwd: Path, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kw,
    )
    assert res.returncode == 0, f"{cmd} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def _build(kind: str, source: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    res = _run([sys.executable, "-c", BACKEND, kind, out], cwd=source)
    return out / res.stdout.strip().splitlines()[-1]


def _site_packages(venv: Path) -> Path:
    (path,) = venv.glob("lib/python*/site-packages")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    # a copy of the checkout: its top-level files and src/, no caches or build leftovers
    copy = tmp / "checkout"
    copy.mkdir()
    for f in ROOT.iterdir():
        if f.is_file():
            shutil.copy2(f, copy / f.name)
    shutil.copytree(SRC, copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    sdist = _build("sdist", copy, tmp / "dist")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel = _build("wheel", unpacked, tmp / "dist")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-compile", "-q"]
    if FULL_INSTALL:
        _run([*pip, wheel], cwd=tmp)
    else:
        _run([*pip, "--no-deps", "--no-index", wheel], cwd=tmp)
        main_site = [p for p in site.getsitepackages() if Path(p).is_dir()]
        (_site_packages(venv) / "zz_main_venv_dependencies.pth").write_text(
            "".join(f"{p}\n" for p in main_site)
        )
    work = tmp / "work"  # the commands' working folder: not the checkout
    work.mkdir()
    return {"sdist": sdist, "wheel": wheel, "venv": venv, "python": python, "work": work}


def _sources() -> set[str]:
    return {
        p.relative_to(SRC).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts
    }


def test_wheel_holds_the_package_its_data_and_the_command(built):
    assert built["wheel"].name == f"{WHEEL_STEM}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(built["wheel"]) as z:
        names = set(z.namelist())
        meta = z.read(f"{WHEEL_STEM}-0.1.0.dist-info/METADATA").decode()
        entry_points = z.read(f"{WHEEL_STEM}-0.1.0.dist-info/entry_points.txt").decode()
    assert _sources() <= names
    assert "unlearn/federation/flower_app/pyproject.toml" in names  # the Flower App
    assert {f"unlearn/bench/scenarios/{s}" for s in SCENARIOS} <= names
    assert "mnist1d-random10.yaml" in SCENARIOS
    assert f"Name: {DIST_NAME}\n" in meta
    assert f'Requires-Dist: {DIST_NAME}[llm]; extra == "test"' in meta
    assert re.search(r"^unlearn = unlearn\.cli:main$", entry_points, re.M)


def test_sdist_holds_what_the_build_needs(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= names
    assert {f"src/{s}" for s in _sources()} <= names
    assert {f"src/unlearn/bench/scenarios/{s}" for s in SCENARIOS} <= names


def test_unlearn_imports_from_the_fresh_venv(built):
    probe = (
        "import importlib.metadata as md, json, sys, unlearn\n"
        "from unlearn.bench.scenario import DEFAULT_SCENARIO\n"
        f"dist = md.distribution({DIST_NAME!r})\n"
        "print(json.dumps({'file': unlearn.__file__, 'path': sys.path,"
        " 'version': unlearn.__version__, 'dist_version': dist.version,"
        " 'dist_at': str(dist.locate_file('')), 'scenario': str(DEFAULT_SCENARIO),"
        " 'prefix': sys.prefix}))\n"
    )
    res = _run([built["python"], "-c", probe], cwd=built["work"])
    info = json.loads(res.stdout)
    site_packages = _site_packages(built["venv"]).resolve()
    assert Path(info["prefix"]).resolve() == built["venv"].resolve()
    assert Path(info["file"]).resolve() == site_packages / "unlearn" / "__init__.py"
    assert Path(info["dist_at"]).resolve() == site_packages
    assert info["version"] == info["dist_version"] == "0.1.0"
    assert Path(info["scenario"]).resolve().is_relative_to(site_packages)
    # the main venv's editable install (src/ on sys.path) is not active
    assert not any(Path(p).resolve().is_relative_to(SRC) for p in info["path"] if p)


def test_unlearn_methods_from_the_fresh_venv(built):
    from unlearn import available_methods

    res = _run([built["venv"] / "bin" / "unlearn", "methods"], cwd=built["work"])
    rows = res.stdout.splitlines()
    assert rows[0].split() == ["method", "requests", "models", "summary"]
    listed = {r.split()[0] for r in rows[1:] if r and not r.startswith("deprecated")}
    assert listed == set(available_methods())
    assert {"retrain", "neggrad_plus", "salun", "scrub"} <= listed


def test_default_scenario_is_packaged(built):
    out = built["work"] / "check-out"
    res = _run(
        [built["venv"] / "bin" / "unlearn", "bench", "--check", "--out", out], cwd=out.parent
    )
    scenario = _site_packages(built["venv"]) / "unlearn" / "bench" / "scenarios"
    assert f"{scenario / 'mnist1d-random10.yaml'}: valid" in res.stdout
    assert not out.exists()


def test_readme_example_runs_in_the_fresh_venv(built):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"^```python\n(.*?)^```", readme, re.M | re.S).group(1)
    assert "unlearn.unlearn(" in example
    script = built["work"] / "readme_example.py"
    script.write_text(example)
    res = _run([built["python"], script], cwd=built["work"])
    seconds, peak_mem_mb, steps = res.stdout.split()[-3:]  # print(record.seconds, ...)
    assert float(seconds) > 0 and int(steps) > 0
    float(peak_mem_mb)
    assert (built["work"] / "unlearned.safetensors").stat().st_size > 0
