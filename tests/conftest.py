import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `training/` is a folder of scripts, not an installed package


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
