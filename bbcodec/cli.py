"""Command-line interface: a thin shell over the Python API."""
from __future__ import annotations

import sys

import click
import torch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bbcodec")
def main():
    """bbcodec: lossless compression by bits-back coding with VAEs."""


@main.command()
@click.option("--lanes", default=4096, show_default=True, help="coder lanes")
@click.option("--rounds", default=64, show_default=True, help="symbols per lane")
def selftest(lanes, rounds):
    """Round-trip random symbols through every codec and report code length vs information."""
    from . import entropy_models as em
    from .ans import Message
    from .codecs import EntropyCodec

    gen = torch.Generator().manual_seed(0)
    shape = (rounds, lanes)
    models = {
        "bernoulli": em.Bernoulli(logits=torch.randn(shape, generator=gen) * 3),
        "categorical-256": em.Categorical(torch.softmax(torch.randn(shape + (256,), generator=gen) * 2, -1)),
        "logistic-mixture": em.LogisticMixture(torch.rand(shape + (3,), generator=gen) * 255,
                                               torch.exp(torch.randn(shape + (3,), generator=gen)) * 5,
                                               logits=torch.randn(shape + (3,), generator=gen)),
        "gaussian-latent": em.GaussianOnBins(torch.randn(shape, generator=gen), torch.rand(shape, generator=gen) + 0.05, 10),
    }
    ok = True
    for name, model in models.items():
        x = model.lookup(torch.randint(0, 1 << model.precision, shape, generator=gen))[0]
        msg = Message((lanes,))
        EntropyCodec(model).push(msg, x)
        y = EntropyCodec(model).pop(Message.from_bytes(msg.to_bytes()))
        info = model.information(x).sum().item()
        good = torch.equal(x, y)
        ok &= good
        click.echo(f"{name:17s} {x.numel():>9,d} symbols  {msg.bits():>10,d} bits  information {info:>12,.0f}  "
                   f"round trip {'ok' if good else 'FAILED'}")
    sys.exit(0 if ok else 1)


def _parse_settings(pairs):
    out = {}
    for item in pairs:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key, value = item.split("=", 1)
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        out[key.replace("-", "_")] = value
    return out


@main.command()
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--out", required=True, type=click.Path(), help="output model path stem (writes STEM.safetensors, STEM.json, STEM.ckpt)")
@click.option("--test", "test", multiple=True, type=click.Path(exists=True), help="test data for periodic evaluation")
@click.option("--arch", default="context_vae", show_default=True, type=click.Choice(["context_vae", "hierarchical_vae"]))
@click.option("--pixels", default="uint8", show_default=True, type=click.Choice(["uint8", "binary"]),
              help="binary: binarise the training images afresh every batch, and the test images with seed 0")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="architecture setting, e.g. --set latent_dim=32")
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--max-train", default=0, help="use only the first N training images")
@click.option("--max-test", default=0, help="use only the first N test images")
@click.option("--dataset-name", default="", help="dataset description for the model card")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def train(data, out, test, arch, pixels, overrides, epochs, batch_size, lr, seed, max_train, max_test, dataset_name, quiet):
    """Train a codec model on DATA (MNIST IDX, .npy, CIFAR-10 .bin[.gz], or PNG folders).

    Uses CUDA when present; run under `torchrun --nproc-per-node N` for data parallelism.
    Re-running the same command resumes from STEM.ckpt.
    """
    from .train import TrainSettings, run

    config = {"arch": arch, "pixels": pixels}
    if pixels == "binary":
        config.update({"likelihood": "bernoulli"})
    config.update(_parse_settings(overrides))
    settings = TrainSettings(train=list(data), out=out, config=config, test=list(test), epochs=epochs,
                             batch_size=batch_size, lr=lr, seed=seed, max_train=max_train, max_test=max_test,
                             command=" ".join(["bbcodec"] + sys.argv[1:]), dataset_name=dataset_name,
                             progress=not quiet)
    result = run(settings)
    if "sha256" in result:
        click.echo(f"wrote {out}.safetensors ({result['sha256'][:16]}...) and {out}.json")


if __name__ == "__main__":
    main()
