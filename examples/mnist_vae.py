"""Your own VAE, bits-back coded: train a plain torch VAE on binarised MNIST, make it exact,
compress the test digits, decode them in a fresh process, and print the report.

    python examples/mnist_vae.py                  # ~1 min on a laptop CPU
    python examples/mnist_vae.py --tiny           # seconds (what the test suite runs)
"""
import argparse
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import bbcodec
from bbcodec.datasets import binarize, load_images

LATENT = 16


def networks(hidden):
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 2 * LATENT))
    decoder = nn.Sequential(nn.Linear(LATENT, hidden), nn.ReLU(), nn.Linear(hidden, 784), nn.Unflatten(1, (28, 28)))
    return encoder, decoder


def train(encoder, decoder, x, steps):
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=2e-3)
    for _ in range(steps):
        batch = x[torch.randint(0, len(x), (128,))].float()
        mean, log_scale = encoder(batch).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * log_scale.exp()
        nll = nn.functional.binary_cross_entropy_with_logits(decoder(z), batch, reduction="none").sum((1, 2))
        kl = 0.5 * (mean ** 2 + (2 * log_scale).exp() - 1 - 2 * log_scale).sum(1)
        loss = (nll + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item() / 784 / 0.6931  # bits/dim of the last batch


def bits_back_model(encoder, decoder, exact=True):
    make = bbcodec.GaussianVAE.exact if exact else bbcodec.GaussianVAE
    return make(encoder.eval(), decoder.eval(), (28, 28), LATENT, likelihood="bernoulli")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="a few training steps on 256 digits")
    ap.add_argument("--decode", type=Path, help=argparse.SUPPRESS)  # the fresh process
    ap.add_argument("--work", type=Path, default=Path("mnist-vae-example"))
    args = ap.parse_args()
    hidden = 64 if args.tiny else 256
    data = Path(__file__).resolve().parents[1] / "bbcodec" / "samples" / "mnist-test-500-idx3-ubyte.gz"
    train_set = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "train-images-idx3-ubyte.gz"
    full = not args.tiny and train_set.exists()  # else train on test digits 256.. and code 0..255
    x = binarize(load_images(data))[: 500 if full else 256]  # the first test digits, coded
    torch.manual_seed(0)
    encoder, decoder = networks(hidden)
    if args.decode:  # a new process: rebuild the networks from their weights and decode the file
        encoder.load_state_dict(load_file(args.decode / "encoder.safetensors"))
        decoder.load_state_dict(load_file(args.decode / "decoder.safetensors"))
        images = bbcodec.decompress_images((args.decode / "digits.bbc").read_bytes(), model=bits_back_model(encoder, decoder))
        print("restored exactly in a fresh process" if torch.equal(images, x) else "MISMATCH")
        return
    train_x = binarize(load_images(train_set)) if full else binarize(load_images(data))[256:]
    print(f"trained: {train(encoder, decoder, train_x, 40 if args.tiny else 1500):.4f} bits/dim on the last batch")
    args.work.mkdir(exist_ok=True)
    save_file(encoder.state_dict(), str(args.work / "encoder.safetensors"))
    save_file(decoder.state_dict(), str(args.work / "decoder.safetensors"))
    model = bits_back_model(encoder, decoder)
    (args.work / "digits.bbc").write_bytes(bbcodec.compress_images(x, model=model, fallback=False))
    subprocess.run([sys.executable, __file__, "--decode", str(args.work)] + ["--tiny"] * args.tiny, check=True)
    report = bbcodec.evaluate(model, x)
    float_elbo = bbcodec.evaluate(bits_back_model(encoder, decoder, exact=False), x)["negative_elbo_bits_per_dim"]
    elbo = report["negative_elbo_bits_per_dim"]
    print(f"negative ELBO {elbo:.5f} bits/dim (float networks {float_elbo:.5f}: exactness costs "
          f"{100 * (elbo / float_elbo - 1):+.3f}%); code length {report['code_length_bits_per_dim']:.5f} bits/dim "
          f"({100 * report['code_length_over_elbo']:+.2f}%), whole file, round trip verified")
    for what, bits in report["overhead_bits"].items():
        print(f"  {what.replace('_', ' '):30s} {bits:8,d} bits")
    print(f"  encode {report['encode_images_per_s']:,.0f} images/s, decode {report['decode_images_per_s']:,.0f} images/s")


if __name__ == "__main__":
    main()
