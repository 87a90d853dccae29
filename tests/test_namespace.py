"""The package namespace: the API names, lazily, without importing torch."""
import subprocess
import sys

import bbcodec

API = ["compress", "decompress", "evaluate", "info", "compress_images", "decompress_images", "train",
       "BBCodecError", "__version__"]


def test_import_bbcodec_does_not_import_torch():
    code = ("import sys, bbcodec\nassert 'torch' not in sys.modules, 'torch'\n"
            "dir(bbcodec); bbcodec.BBCodecError; bbcodec.__version__\nassert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_train_is_the_training_function():
    import bbcodec.training

    assert callable(bbcodec.train) and bbcodec.train is bbcodec.training.train
    from bbcodec import train

    assert train is bbcodec.training.train
    r = subprocess.run([sys.executable, "-c", "from bbcodec import train; import bbcodec; assert bbcodec.train is train"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dir_and_all_list_the_api():
    assert set(API) <= set(dir(bbcodec))
    assert set(API) <= set(bbcodec.__all__)
    for name in API:
        assert getattr(bbcodec, name) is not None
    from bbcodec import api

    assert bbcodec.compress is api.compress and bbcodec.decompress_images is api.decompress_images
    assert issubclass(bbcodec.BBCodecError, Exception)


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        bbcodec.no_such_name  # noqa: B018


def test_train_function_writes_a_model(tmp_path):
    from bbcodec.zoo import load_model

    from helpers import SAMPLE_IDX

    tiny = {"hidden": 32, "latent_dim": 4, "channels": 4, "features": 4, "head_hidden": 8, "components": 2}
    result = bbcodec.train(SAMPLE_IDX, tmp_path / "m", config=tiny, epochs=1, batch_size=50, max_train=100,
                           progress=False)
    assert result["finished"] and result["sha256"]
    loaded = load_model(tmp_path / "m")
    assert loaded.config["hidden"] == 32 and loaded.config["arch"] == "context_vae"
    assert loaded.meta["training_command"].startswith("bbcodec.train(")
