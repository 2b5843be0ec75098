import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from harmref import models  # noqa: E402


@pytest.fixture(scope="session", params=["chatml", "llama2", "llama3"])
def tiny(request):
    model, tok = models.tiny_random(request.param)
    tok.padding_side = "left"
    return request.param, model, tok


@pytest.fixture(scope="session")
def chatml():
    model, tok = models.tiny_random("chatml")
    tok.padding_side = "left"
    return model, tok
