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


if __name__ == "__main__":
    main()
