"""Command-line interface: a thin shell over :mod:`bbcodec.api`.

Every failure the user can cause ends with one line on stderr and a non-zero exit status (1 for
bad input or refused requests, 2 for bad usage, 130 for Ctrl-C); ``-v`` adds the traceback of
unexpected errors. With several input files, each failure is reported and the rest are still
processed; the exit status is then 1 if any failed (as gzip does).

Start-up stays fast: this module imports only click and the standard library; torch, numpy and
the codec are imported by the commands that need them.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import click

from .coding_params import cli_options
from .errors import BBCodecError
from .registry import ARCHITECTURES

TRAINABLE_ARCHITECTURES = [name for name in ARCHITECTURES if name != "protocol"]

_VERBOSE = False
KINDS = ("idx", "npy", "cifar", "png", "pnm")  # as bbcodec.formats.KINDS (not imported: it needs numpy)
INTERRUPTED = 130
CLOSED_PIPE = 141  # as a shell reports a process ended by SIGPIPE (128 + 13)


_SIGINT = [False]  # set once Ctrl-C was pressed, even if some library swallowed the KeyboardInterrupt


def _on_sigint(signum, frame):
    _SIGINT[0] = True
    raise KeyboardInterrupt


def _interrupted():
    click.echo("bbcodec: interrupted", err=True)
    sys.exit(INTERRUPTED)


def _check_interrupted():
    """Ctrl-C that surfaced as another exception (an import it broke) or not at all: still Ctrl-C."""
    if _SIGINT[0]:
        _interrupted()


def _closed_pipe():
    """Standard output's reader went away (``bbcodec info F | head -1``): stop quietly, as tools
    ended by SIGPIPE do, with its status; what is still buffered goes nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(CLOSED_PIPE)


def _internal_error(exc: BaseException) -> None:
    if _VERBOSE:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    click.echo(f"bbcodec: internal error: {type(exc).__name__}: {exc} (run with -v for details)", err=True)


class _Group(click.Group):
    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """Click's ``main``, with Ctrl-C anywhere (argument parsing, imports, coding, writing)
        one line and exit status 130 instead of a traceback or click's "Aborted!"."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        import signal

        _SIGINT[0] = False
        try:
            previous = signal.signal(signal.SIGINT, _on_sigint)
        except ValueError:  # not the main thread
            previous = None
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except KeyboardInterrupt:
            _interrupted()
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
                _interrupted()
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        _check_interrupted()
        sys.exit(rv if isinstance(rv, int) else 0)

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            _interrupted()

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BBCodecError as exc:
            _check_interrupted()
            click.echo(f"bbcodec: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            _interrupted()
        except BrokenPipeError:
            _closed_pipe()
        except MemoryError:
            click.echo("bbcodec: error: out of memory (try a smaller --chunk)", err=True)
            sys.exit(1)
        except Exception as exc:  # an internal error must still not spill a traceback by default
            _check_interrupted()
            _internal_error(exc)
            sys.exit(3)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bbcodec")
@click.option("-v", "--verbose", is_flag=True, help="more detail, and tracebacks of internal errors")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for the networks (default: the CPUs this process may use, 1 to 8, and half "
                   "of them for `train`; BBCODEC_THREADS also sets it); results do not depend on it")
@click.pass_context
def main(ctx, verbose, threads):
    """bbcodec: lossless compression by bits-back coding with VAEs.

    FILE "-" is standard input (output then goes to standard output); -c writes to standard output.
    """
    global _VERBOSE
    _VERBOSE = verbose
    from .threads import configure

    configure(threads, training=ctx.invoked_subcommand == "train")


cli = main  # the click group (see _Group.main for what running it standalone does)


def run() -> None:
    """The console entry point (``bbcodec``, ``python -m bbcodec``): :func:`main`, then, once
    torch is loaded, an exit that skips the interpreter's teardown, which spends 0.5-0.8 s here
    freeing torch's modules and libraries. By then every output is written, renamed into place and
    closed; standard output and error are flushed here. A process that started worker processes
    (``--jobs``) or joined a process group (``torchrun``) exits the normal way, which waits for
    the others and frees what it shares with them."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    parallel, dist = sys.modules.get("bbcodec.parallel"), sys.modules.get("torch.distributed")
    if ("torch" not in sys.modules or (parallel is not None and parallel.workers_started())
            or (dist is not None and dist.is_available() and dist.is_initialized())):
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"), as Python prints it
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: the output was not all delivered
        code = code or 1
    os._exit(code or 0)


class _Progress:
    """A ``progress(n, total)`` callback drawing a tqdm bar, created on the first call. It counts
    coding units: images, or tiles for tiled models; the API sets ``images`` (when it can tell the
    file's image count) so that the bar can say which. With several phases (``eval``: encode, then
    decode), a new bar starts when a full one gets more."""

    def __init__(self, descs, images=None):
        self.descs, self.images, self.bar = list(descs), images, None
        self.desc = self.unit = None
        self.done = self.total = 0

    def __call__(self, n, total):
        from tqdm import tqdm

        if self.bar is not None and self.total and self.done >= self.total and len(self.descs) > 1:
            self.close()
            self.descs.pop(0)
        if self.bar is None:
            self.unit = "units" if not self.images else ("image" if total == self.images else "tile")
            self.desc, self.done, self.total = self.descs[0], 0, total
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=False, dynamic_ncols=True, disable=None)
        self.done += n
        self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextmanager
def _progress(quiet, *descs, images=None):
    """A :class:`_Progress` callback (closed at the end), or None when ``quiet``."""
    if quiet:
        yield None
        return
    tick = _Progress(descs, images)
    try:
        yield tick
    finally:
        tick.close()


def _coding_options(f):
    """The coding options of :data:`bbcodec.coding_params.OPTIONS` that have command-line help, then ``--chunk``."""
    for opt in cli_options():
        flag = "--" + opt.name.replace("_", "-")
        if opt.kind is bool:
            f = click.option(f"{flag}/--no-{flag[2:]}", default=None, help=opt.cli)(f)
        else:
            f = click.option(flag, type=click.IntRange(opt.bounds[0]) if opt.kind is int else click.FloatRange(opt.bounds[0]),
                             help=opt.cli)(f)
    f = click.option("--chunk", default=10_000, show_default=True, type=click.IntRange(1),
                     help="images (tiles, for tiled models) per independently decodable chunk (bounds memory); "
                          "changes the file's bytes")(f)
    return f


def _jobs_option(f):
    """``--jobs N``: chunks coded in N worker processes (see :mod:`bbcodec.parallel`)."""
    return click.option("-j", "--jobs", default=1, show_default=True, type=click.IntRange(0, 1024), metavar="N",
                        help="code the chunks in N worker processes of one thread each (0: one per CPU); the "
                             "same bytes whatever N; a file of one chunk gains nothing (see --chunk)")(f)


def _coding(**options):
    """The coding options given on the command line (the model's defaults fill in the rest)."""
    return {k: v for k, v in options.items() if v is not None} or None


def _output(files, output, to_stdout):
    """The one output for all ``files`` (``-o``, or ``-`` for ``-c``), or None: each its default."""
    if to_stdout:
        if output is not None and output != "-":
            raise click.UsageError("-c/--stdout and -o/--output name two outputs; give one")
        output = "-"
    if output is not None and len(files) > 1:
        raise click.UsageError("-o/--output and -c/--stdout need exactly one input file")
    if sum(1 for f in files if f == "-") > 1:
        raise click.UsageError("standard input (-) can be read only once")
    return output


def _name(path) -> str:
    return "<stdin>" if path == "-" else str(path)


def _each_file(files, quiet, verb, work, line):
    """Run ``work(path, progress)`` for every file; print each result's ``line`` (on stderr when the
    data went to standard output) and ``note``, or its one-line error naming the file, and carry on.
    Exits with the worst status at the end (1 if any failed; 3 for an internal error)."""
    status = 0
    for path in files:
        name = _name(path)
        try:
            with _progress(quiet, f"{verb} {name}") as tick:
                r = work(path, tick)
        except BBCodecError as exc:
            _check_interrupted()
            msg = str(exc)
            click.echo(f"bbcodec: error: {msg if name in msg else f'{name}: {msg}'}", err=True)
            status = max(status, 1)
            continue
        except MemoryError:
            click.echo(f"bbcodec: error: {name}: out of memory (try a smaller --chunk)", err=True)
            status = max(status, 1)
            continue
        except (KeyboardInterrupt, click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - reported like the group reports it, then the next file
            _check_interrupted()
            _internal_error(exc)
            status = max(status, 3)
            continue
        if not quiet:
            if r.get("note"):
                click.echo(f"bbcodec: {r['input']}: {r['note']}", err=True)
            click.echo(line(r), err=r["output"] == "<stdout>")
        _check_interrupted()
    if status:
        sys.exit(status)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("-o", "--output", type=click.Path(allow_dash=True), help="output file (one input only; - : standard output); default FILE.bbc")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="write to standard output (one input only)")
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@click.option("-m", "--model", help="model name (embedded or installed: `bbcodec models`) or model path "
              "(default: chosen from the data)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar or summary")
@click.option("--kind", type=click.Choice(KINDS), help="what the data is (default: told by its content; CIFAR-10 batches by a .bin name)")
@click.option("--gunzipped", is_flag=True,
              help="a gzip file that zlib cannot reproduce: code the data inside, restored as the plain (gunzipped) file")
@click.option("--fallback/--no-fallback", default=True,
              help="store with zlib where the model would code the data in more bytes (default: on)")
@_coding_options
@_jobs_option
def compress(files, output, to_stdout, force, model, quiet, kind, gunzipped, fallback, chunk, jobs, **coding):
    """Compress image datasets or images: IDX (gzipped or not), .npy, PNG, PPM/PGM, CIFAR-10 .bin[.gz].

    FILE "-" reads standard input and writes standard output. Inputs are never modified or deleted.
    """
    output = _output(files, output, to_stdout)
    from . import api

    def work(path, tick):
        return api.compress(path, output, model=model, force=force, chunk=chunk, coding=_coding(**coding),
                            progress=tick, kind=kind, gunzipped=gunzipped, fallback=fallback, jobs=jobs)

    _each_file(files, quiet, "compress", work,
               lambda r: (f"{r['input']} -> {r['output']}: {r['images']} images, {r['input_bytes']:,} -> "
                          f"{r['output_bytes']:,} bytes, {r['bits_per_dim']:.4f} bits/dim ({r['model']}, "
                          f"{r['seconds']:.1f} s)"))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("-o", "--output", type=click.Path(allow_dash=True), help="output file (one input only; - : standard output); default: FILE without .bbc")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="write to standard output (one input only)")
@click.option("-f", "--force", is_flag=True, help="overwrite existing outputs")
@click.option("-m", "--model", help="model name or path (default: the embedded or installed model of the file's "
              "name, else of its weights' SHA-256; see `bbcodec models`)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar or summary")
@_jobs_option
def decompress(files, output, to_stdout, force, model, quiet, jobs):
    """Decompress .bbc files, restoring the original exactly (verified by checksum).

    FILE "-" reads standard input and writes standard output (or -o FILE).
    """
    output = _output(files, output, to_stdout)
    from . import api

    def work(path, tick):
        return api.decompress(path, output, force=force, model=model, progress=tick, jobs=jobs)

    _each_file(files, quiet, "decompress", work,
               lambda r: f"{r['input']} -> {r['output']}: {r['images']} images ({r['seconds']:.1f} s)")


@main.command(name="eval")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("-m", "--model", help="model name (embedded or installed: `bbcodec models`) or model path "
              "(default: chosen from the data)")
@click.option("--limit", type=click.IntRange(1), help="use only the first N images")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@_coding_options
@_jobs_option
def evaluate(data, model, limit, as_json, quiet, chunk, jobs, **coding):
    """Negative ELBO vs achieved code length (bits/dim) on DATA, verified by a full round trip."""
    from . import api
    from .fileio import read_input
    from .formats import count_images

    images = None if quiet else count_images(read_input(data), data)
    if images and limit:
        images = min(images, limit)
    with _progress(quiet, f"eval {data}: encode", f"eval {data}: decode", images=images) as tick:
        r = api.evaluate(data, model=model, limit=limit, chunk=chunk, coding=_coding(**coding), progress=tick,
                         jobs=jobs)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"{r['input']}: {r['images']} images, model {r['model']}")
    click.echo(f"  negative ELBO      {r['negative_elbo_bits_per_dim']:.4f} bits/dim  (KL {r['kl_bits_per_dim']:.4f})")
    if r["unadapted_negative_elbo_bits_per_dim"] != r["negative_elbo_bits_per_dim"]:
        click.echo(f"    without the scale maps       {r['unadapted_negative_elbo_bits_per_dim']:.4f} bits/dim")
    click.echo(f"  code length        {r['code_length_bits_per_dim']:.4f} bits/dim  "
               f"({100 * r['code_length_over_elbo']:+.2f}% vs negative ELBO), whole file: {r['total_bits'] // 8:,} bytes")
    for k, v in r["overhead_bits"].items():
        click.echo(f"    {k.replace('_', ' '):30s} {v:>10,d} bits  ({v / r['dims']:.5f} bits/dim)")
    click.echo(f"  speed              encode {r['encode_seconds']:.1f} s ({r['encode_images_per_s']:,.1f} images/s), "
               f"decode {r['decode_seconds']:.1f} s ({r['decode_images_per_s']:,.1f} images/s), "
               + (f"{r['jobs']} worker processes" if r.get("jobs", 1) > 1 else f"{r['threads']} threads"))


def _model_row(m) -> dict:
    from .zoo import default_roles

    row = {"name": m.name, "where": m.where, "path": str(m.path), "sha256": m.sha256, "size_bytes": m.size_bytes}
    row.update({k: v for k, v in m.meta.items() if k not in row})
    row.update({"pixels": m.config.get("pixels"), "arch": m.config.get("arch")})
    if m.shadowed:
        row["shadowed"] = True
    role = default_roles().get(m.name) if m.where == "embedded" else None
    if role:
        row["default_for"] = role
    return row


def _model_line(r, width: int = 16) -> str:
    bpd = r.get("test_bits_per_dim")
    if bpd is not None:
        figure = f"test {bpd:.4f} bits/dim"
    elif r.get("test_bits_per_dim_float") is not None:  # a model from `bbcodec train`
        figure = f"test {r['test_bits_per_dim_float']:.4f} bits/dim (training ELBO)"
    elif r.get("valid_bits_per_dim_float") is not None:  # trained on photos with --valid
        figure = f"validation {r['valid_bits_per_dim_float']:.4f} bits/dim (training ELBO)"
    else:
        figure = "no test figure"
    return (f"{r['name']:{width}s} {r.get('dataset', '?')}; {figure}; {r['size_bytes'] / 1e6:.1f} MB"
            + (f"; the default for {r['default_for']}" if r.get("default_for") else "")
            + ("; shadowed by an earlier model of that name" if r.get("shadowed") else ""))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
@click.option("--install", "install", type=click.Path(), metavar="PATH",
              help="install the model at PATH (STEM, STEM.safetensors or STEM.json) into your models directory")
@click.option("--name", help="with --install: the name to install it under (default: its file name)")
@click.option("-f", "--force", is_flag=True, help="with --install: replace another installed model of that name")
def models(as_json, install, name, force):
    """The embedded models and yours, or --install PATH: add one of yours.

    Your models live in $BBCODEC_MODELS (several directories separated by ':'; installs go to the
    first), by default ~/.local/share/bbcodec/models ($XDG_DATA_HOME/bbcodec/models). Decompression
    finds a file's model there by name, or by the SHA-256 of its weights.
    """
    from . import zoo

    if install is None:
        if name is not None or force:
            raise click.UsageError("--name and -f/--force go with --install PATH")
    else:
        stem = zoo.install_model(install, name=name, force=force)
        if as_json:
            click.echo(json.dumps({"name": stem.name, "path": str(stem),
                                   "sha256": zoo.cached_sha256(stem.with_name(stem.name + ".safetensors"))}, indent=2))
        else:
            where = "an embedded model" if stem.parent == zoo.ZOO_DIR else f"installed in {stem.parent}"
            click.echo(f"{stem.name}: {where}; `-m {stem.name}` selects it, and decompression finds it by itself")
        return
    rows = [_model_row(m) for m in zoo.installed_models()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    embedded = [r for r in rows if r["where"] == "embedded"]
    width = max([16] + [len(r["name"]) for r in rows])  # the descriptions in one column
    if not embedded:
        click.echo("no embedded models")
    for r in embedded:
        click.echo(_model_line(r, width))
    dirs = zoo.user_model_dirs()
    for d in dirs:
        mine = [r for r in rows if r["where"] == "user" and Path(r["path"]).parent == d]
        if mine:
            click.echo(f"your models in {d}:")
            for r in mine:
                click.echo(_model_line(r, width))
    if not any(r["where"] == "user" for r in rows):
        click.echo(f"no models of yours in {os.pathsep.join(map(str, dirs))} (`bbcodec models --install PATH` adds one)")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True)
def info(file, as_json):
    """What a .bbc file holds (FILE "-": standard input)."""
    from .container import describe
    from .fileio import read_input

    r = describe(read_input(file))  # the container alone: no torch
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    for k, v in r.items():
        if k == "coding" and isinstance(v, dict):  # long per-level lists (scale maps) in brief
            v = {key: f"{'/'.join(str(len(level)) for level in value)} values per level (--json lists them)"
                 if isinstance(value, list) and sum(len(level) for level in value if isinstance(level, list)) > 32
                 else value for key, value in v.items()}
        click.echo(f"{k:14s} {v}")


@main.command()
@click.option("--lanes", default=4096, show_default=True, help="coder lanes")
@click.option("--rounds", default=64, show_default=True, help="symbols per lane")
def selftest(lanes, rounds):
    """Round-trip random symbols through the main entropy models; report code length vs information."""
    import torch

    from . import entropy_models as em
    from .ans import Message
    from .codecs import EntropyCodec

    gen = torch.Generator().manual_seed(0)
    shape = (rounds, lanes)
    models_ = {
        "bernoulli": em.Bernoulli(logits=torch.randn(shape, generator=gen) * 3),
        "categorical-256": em.Categorical(torch.softmax(torch.randn(shape + (256,), generator=gen) * 2, -1)),
        "logistic-mixture": em.LogisticMixture(torch.rand(shape + (3,), generator=gen) * 255,
                                               torch.exp(torch.randn(shape + (3,), generator=gen)) * 5,
                                               logits=torch.randn(shape + (3,), generator=gen)),
        "gaussian-latent": em.GaussianOnBins(torch.randn(shape, generator=gen), torch.rand(shape, generator=gen) + 0.05, 10),
    }
    ok = True
    for name, model in models_.items():
        x = model.lookup(torch.randint(0, 1 << model.precision, shape, generator=gen))[0]
        msg = Message((lanes,))
        EntropyCodec(model).push(msg, x)
        y = EntropyCodec(model).pop(Message.from_bytes(msg.to_bytes()))
        information = model.information(x).sum().item()
        good = torch.equal(x, y)
        ok &= good
        click.echo(f"{name:17s} {x.numel():>9,d} symbols  {msg.bits():>10,d} bits  information {information:>12,.0f}  "
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
@click.option("-o", "--out", required=True, type=click.Path(), help="output model path stem (writes STEM.safetensors, STEM.json, and the checkpoint folder STEM.ckpt)")
@click.option("--test", "test", multiple=True, type=click.Path(exists=True),
              help="test data (images of the training shape) for evaluation after every epoch")
@click.option("--valid", "valid", multiple=True, type=click.Path(exists=True),
              help="validation images of any sizes (PNG folders or files, or any DATA format): negative ELBO on their "
                   "non-overlapping crops after every epoch")
@click.option("--crop", default=0, metavar="SIZE",
              help="train on random SIZE x SIZE crops, fresh every epoch [default: the model's patch, where DATA are "
                   "photos of different sizes; else whole images]")
@click.option("--crops-per-epoch", default=0, metavar="N",
              help="random crops per epoch [default: as many as the training images' non-overlapping crops]")
@click.option("--flips", default="h", show_default=True, type=click.Choice(["none", "h", "hv"]),
              help="random flips of the crops: left-right (h), also upside down (hv)")
@click.option("--max-valid", default=0, metavar="N", help="use at most N validation crops, evenly spaced")
@click.option("--grey", is_flag=True, help="train on the luminance (PIL convert('L')): a one-channel model")
@click.option("--init", default="", metavar="MODEL",
              help="fine-tune: start from this model's weights and configuration (name or path)")
@click.option("--arch", default="context_vae", show_default=True, type=click.Choice(TRAINABLE_ARCHITECTURES))
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
@click.option("--stop-after", default=0, help="stop after N epochs of this run (checkpointed; rerun to resume)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def train(data, out, test, valid, crop, crops_per_epoch, flips, max_valid, grey, init, arch, pixels, overrides, epochs,
          batch_size, lr, seed, max_train, max_test, dataset_name, stop_after, quiet):
    """Train a codec model on DATA (MNIST IDX, .npy, CIFAR-10 .bin[.gz], PNG files or folders).

    Photos of different sizes (or any DATA with --crop) are trained on random crops, drawn afresh
    every epoch from the seed and the epoch; --valid evaluates photos on fixed grid crops.
    Uses CUDA when present; run under `torchrun --nproc-per-node N` for data parallelism.
    Re-running the same command resumes from STEM.ckpt.
    """
    from .training import train as train_model

    config = {"arch": arch, "pixels": pixels, **_parse_settings(overrides)}  # --set arch=... wins, as before
    result = train_model(list(data), out, list(test), config=config, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_train=max_train,
                         max_test=max_test, command=" ".join(["bbcodec"] + sys.argv[1:]), dataset_name=dataset_name,
                         progress=not quiet, stop_after=stop_after, valid=list(valid), crop=crop,
                         crops_per_epoch=crops_per_epoch, max_valid=max_valid, grey=grey, flips=flips, init=init)
    if "sha256" in result:
        click.echo(f"wrote {out}.safetensors ({result['sha256'][:16]}...) and {out}.json; "
                   f"`bbcodec models --install {out}` makes it available by name")
    elif not result["finished"]:
        click.echo(f"stopped after epoch {result['history'][-1]['epoch']}; run the same command again to resume")


if __name__ == "__main__":
    run()
