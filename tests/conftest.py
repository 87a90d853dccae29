import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def shared_data(*parts):
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path_factory, monkeypatch):
    """No test sees, or installs into, the user's own models directory (tests that need one set
    BBCODEC_MODELS themselves)."""
    monkeypatch.setenv("BBCODEC_MODELS", str(tmp_path_factory.getbasetemp() / "no-user-models"))
