"""What this machine has. Tests of the no-GPU paths run only where there is no NVIDIA driver (CI,
laptops); on a GPU node — where the self-tests also run — they skip and say why."""

import ctypes.util
import shutil

import pytest


def driver_present() -> bool:
    return bool(shutil.which("nvidia-smi") or ctypes.util.find_library("nvidia-ml"))


without_gpu = pytest.mark.skipif(driver_present(), reason="an NVIDIA driver is installed here: this tests the no-GPU path")
