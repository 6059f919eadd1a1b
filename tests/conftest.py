import os
from pathlib import Path

import pytest
import torch

# Test tensors are small: one intra-op thread is as fast and immune to oversubscription.
torch.set_num_threads(1)

#: The data folder named by SCORESDE_DATA (holding mnist/ and fashion-mnist/); tests that need it skip without it.
DATA_DIR = Path(os.environ.get("SCORESDE_DATA") or "/nonexistent-scoresde-data")


@pytest.fixture
def data_dir():
    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip("MNIST not found: set SCORESDE_DATA to a folder holding mnist/")
    return DATA_DIR
