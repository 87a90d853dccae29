"""The examples run: a user's own VAE trained, made exact, compressed, decoded in a fresh process."""
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_your_own_vae_example(tmp_path):
    r = subprocess.run([sys.executable, str(EXAMPLES / "mnist_vae.py"), "--tiny", "--work", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "restored exactly in a fresh process" in r.stdout
    assert "negative ELBO" in r.stdout and "code length" in r.stdout and "images/s" in r.stdout
    assert (tmp_path / "w" / "digits.bbc").stat().st_size > 0
