"""A/B of the CDF lookup search on 8-bit MNIST decoding, in the same run: plain bisection
(``SMALL_SEARCH = 0``) against the 16-way search on few lanes (the default). Medians of 3 decodes
of the 500 sample digits, round trips verified.

    python bench/search_ab.py
"""
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bbcodec import api  # noqa: E402
from bbcodec import entropy_models as em  # noqa: E402
from bbcodec.datasets import load_images  # noqa: E402

images = load_images(ROOT / "bbcodec" / "samples" / "mnist-test-500-idx3-ubyte.gz")
data = api.compress_images(images)
default = em.CDFModel.SMALL_SEARCH
times = {"bisection": [], "16-way": []}
for _ in range(3):
    for name, small in (("bisection", 0), ("16-way", default)):
        em.CDFModel.SMALL_SEARCH = small
        t = time.perf_counter()
        out = api.decompress_images(data)
        times[name].append(time.perf_counter() - t)
        assert torch.equal(out, images), "round trip failed"
em.CDFModel.SMALL_SEARCH = default
med = {k: statistics.median(v) for k, v in times.items()}
print({k: f"{v:.2f} s" for k, v in med.items()}, f"speed-up {med['bisection'] / med['16-way']:.2f}x")
