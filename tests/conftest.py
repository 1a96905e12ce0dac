import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


# the simulator tests' model and input (test_snn_simulate.py, test_burst.py): a float64 digits MST whose
# every kind of site fires, and four random 8×8 inputs
@pytest.fixture(scope="module")
def mst():
    from model_fixtures import spiky_mst
    return spiky_mst(0)


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
