import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MSRVTT_SPLIT = REPO / "data" / "msrvtt" / "MSRVTT_JSFUSION_test.csv"


def pytest_configure(config):
    # The rules call the `mcnflow` console script: make the one next to this interpreter findable.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def msrvtt_csv() -> Path:
    """The real MSR-VTT 1k-A test split, shipped in the repository (data/msrvtt/)."""
    assert MSRVTT_SPLIT.is_file(), f"the repository must ship {MSRVTT_SPLIT}"
    return MSRVTT_SPLIT


def require_ffmpeg():
    if not shutil.which("ffmpeg"):
        pytest.fail("ffmpeg is not installed (make test installs it)")


@pytest.fixture
def one_torch_thread():
    """Tiny tensors on a shared 2-core machine: intra-op threads only wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
