from pathlib import Path

import pytest
import torch

# Test tensors are small: one intra-op thread is as fast and immune to oversubscription.
torch.set_num_threads(1)

#: The shared datasets folder beside the project (absent on some machines: tests then skip).
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def data_dir():
    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip(f"MNIST not found under {DATA_DIR}")
    return DATA_DIR
