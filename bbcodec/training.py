"""Training codec models: Adam with linear warm-up and cosine decay, periodic test negative ELBO in bits/dim,
checkpoints and resume, CUDA when present, and multi-process data parallelism under ``torchrun``
(NCCL on GPUs, gloo on CPUs).

Checkpoints (``OUT.ckpt``) hold only tensors and plain values and load with
``torch.load(weights_only=True)``; the finished model is written as ``OUT.safetensors`` +
``OUT.json``, with the training command, time, hardware and test bits/dim in its metadata.

:func:`train` takes the settings of ``bbcodec train`` (it is ``bbcodec.train`` in the package
namespace); :func:`run` takes a :class:`TrainSettings`.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from .datasets import binarize, load_images
from .zoo import build_model, save_model


@dataclass
class TrainSettings:
    train: list
    out: str
    config: dict
    test: list = field(default_factory=list)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    eval_every: int = 1
    max_train: int = 0  # use only the first N training images (0: all)
    max_test: int = 0
    command: str = ""
    dataset_name: str = ""
    progress: bool = True
    stop_after: int = 0  # stop (checkpointed, resumable) after this many epochs in this run (0: never)


def warmup_cosine(total: int, warmup_fraction: float = 0.05):
    """Learning-rate factor per step: linear warm-up over 5% of the steps, then cosine decay to 1%."""
    warm = max(1, int(warmup_fraction * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def prepare(images: torch.Tensor, pixels: str, train: bool, seed: int = 0) -> torch.Tensor:
    """Training images are binarised afresh for every batch (``train=True`` leaves them 8-bit);
    test images get the fixed standard binarisation."""
    if pixels == "binary" and not train:
        return binarize(images, seed)
    return images


def evaluate_float(model, images: torch.Tensor, device, batch: int = 500) -> dict:
    """Negative ELBO (float32 numerics, one latent sample) in bits/dim, averaged over images."""
    model.eval()
    kl = nll = 0.0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i: i + batch].to(device)
            out = model(x)
            kl += out["kl_bits"].sum().item()
            nll += out["nll_bits"].sum().item()
    n = len(images) * model.dims
    return {"bits_per_dim": (kl + nll) / n, "kl_bits_per_dim": kl / n}


def run(s: TrainSettings) -> dict:
    world, rank, local = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(s.seed + rank)
    pixels = s.config.get("pixels", "uint8")

    train_images = load_images(s.train)
    if s.max_train:
        train_images = train_images[: s.max_train]
    test_images = load_images(s.test) if s.test else None
    if test_images is not None and s.max_test:
        test_images = test_images[: s.max_test]
    if test_images is not None:
        test_images = prepare(test_images, pixels, train=False)

    model = build_model(s.config).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    steps_per_epoch = len(train_images) // s.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_images)} training images are fewer than one batch of {s.batch_size}")
    total = steps_per_epoch * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total))
    ckpt_path = Path(s.out).with_suffix(".ckpt")
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    start_epoch, history, elapsed = 0, [], 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state.get("config") != model.config.to_dict():
            raise ValueError(f"{ckpt_path} was made with another model configuration; remove it or choose another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, history, elapsed = state["epoch"], list(state["history"]), float(state["elapsed"])
        if rank == 0:
            print(f"resumed from {ckpt_path} at epoch {start_epoch}", flush=True)

    per_rank = s.batch_size // world
    t_start = time.time() - elapsed
    last_epoch = s.epochs if not s.stop_after else min(s.epochs, start_epoch + s.stop_after)
    for epoch in range(start_epoch, last_epoch):
        model.train()
        gen = torch.Generator().manual_seed(s.seed * 100003 + epoch)
        perm = torch.randperm(len(train_images), generator=gen)
        it = range(steps_per_epoch)
        if rank == 0 and s.progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"epoch {epoch + 1}/{s.epochs}", leave=False, dynamic_ncols=True)
        running = 0.0
        for step in it:
            idx = perm[step * s.batch_size: (step + 1) * s.batch_size][rank::world][:per_rank]
            x = train_images[idx].to(device)
            if pixels == "binary":
                x = (torch.rand(x.shape, device=device) < x.float() / 255).to(torch.uint8)
            out = ddp(x)
            loss = (out["kl_bits"] + out["nll_bits"]).mean() / model.dims
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
            opt.step()
            sched.step()
            running += loss.item()
            if rank == 0 and s.progress and step % 20 == 0:
                it.set_postfix(bits_per_dim=f"{running / (step + 1):.4f}")
        record = {"epoch": epoch + 1, "train_bits_per_dim": running / steps_per_epoch,
                  "seconds": time.time() - t_start}
        if test_images is not None and rank == 0 and ((epoch + 1) % s.eval_every == 0 or epoch + 1 == s.epochs):
            record.update({f"test_{k}": v for k, v in evaluate_float(model, test_images, device).items()})
        history.append(record)
        if rank == 0:
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)
            tmp = ckpt_path.with_suffix(".ckpt.tmp")
            torch.save({"config": model.config.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch": epoch + 1, "history": history, "elapsed": time.time() - t_start}, tmp)
            tmp.replace(ckpt_path)
    result = {"history": history, "finished": last_epoch == s.epochs}
    if rank == 0 and last_epoch == s.epochs:
        meta = {
            "dataset": s.dataset_name or ", ".join(str(p) for p in s.train),
            "training_images": len(train_images),
            "training_command": s.command,
            "training_seconds": round(time.time() - t_start, 1),
            "hardware": hardware() + (f", {world} processes" if world > 1 else ""),
            "epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr,
            "history": history,
        }
        last = history[-1] if history else {}
        if "test_bits_per_dim" in last:
            meta["test_bits_per_dim_float"] = last["test_bits_per_dim"]
        sample = test_images if test_images is not None else prepare(train_images[:256], pixels, train=False)
        meta["coding"] = measured_coding(model, sample)
        result["sha256"] = save_model(model, Path(s.out), meta)
        result["meta"] = meta
    if world > 1:
        dist.barrier()
    return result


def measured_coding(model, images: torch.Tensor) -> dict:
    """The coding defaults a trained model's JSON records: its architecture's (tiles, pyramid,
    ...), then the start-up estimates, lanes and plain start measured by coding a sample of
    ``images`` with the exact networks (see :func:`bbcodec.image_codec.coding_defaults`)."""
    from .image_codec import coding_defaults
    from .registry import architecture
    from .zoo import LoadedModel

    model = model.eval().cpu()
    arch = architecture(model.config.to_dict().get("arch"))
    loaded = LoadedModel("training", model, model.config.to_dict(), {"coding": dict(arch.coding)})
    patch = getattr(model.config, "patch", None)
    sample = images[:256]
    if arch.tiled and patch and tuple(sample.shape[-2:]) != (patch, patch):
        sample = sample[..., :patch, :patch]  # the estimates are per training patch
    from .api import Layout

    codec = Layout(loaded, sample.shape).codecs()[0]
    return {**arch.coding, **coding_defaults(codec.measure(sample)), **arch.coding}


def _paths(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value]


def train(data, out, test=None, *, config: dict | None = None, arch: str | None = None, pixels: str | None = None,
          epochs: int = 10, batch_size: int = 128, lr: float = 2e-3, seed: int = 0, max_train: int = 0,
          max_test: int = 0, dataset_name: str = "", stop_after: int = 0, eval_every: int = 1,
          progress: bool = True, command: str | None = None) -> dict:
    """Train a codec model, as ``bbcodec train DATA... -o OUT`` does, and write ``OUT.safetensors`` +
    ``OUT.json`` (checkpointed in ``OUT.ckpt``; calling it again with the same settings resumes).

    ``data`` and ``test`` are a path or a list of paths (MNIST IDX, .npy, CIFAR-10 .bin[.gz], PNG
    folders). ``config`` holds architecture settings (``bbcodec train --set KEY=VALUE``), e.g.
    ``{"latent_dim": 32}``; ``arch`` (default ``"context_vae"``) and ``pixels`` (``"uint8"`` or
    ``"binary"``, which also selects the Bernoulli likelihood) may be given here or in ``config``.
    Returns :func:`run`'s result: ``history`` (per epoch), ``finished``, and once finished the
    weights' ``sha256`` and the model's ``meta``. Install the result with
    ``bbcodec models --install OUT`` (or :func:`bbcodec.zoo.install_model`)."""
    extra = dict(config or {})
    arch = arch or extra.pop("arch", "context_vae")
    pixels = pixels or extra.pop("pixels", "uint8")
    extra.pop("arch", None)
    extra.pop("pixels", None)
    cfg = {"arch": arch, "pixels": pixels}
    if pixels == "binary":
        cfg["likelihood"] = "bernoulli"
    cfg.update(extra)
    if command is None:
        command = f"bbcodec.train({_paths(data)!r}, {str(out)!r}, config={cfg!r}, epochs={epochs})"
    settings = TrainSettings(train=_paths(data), out=str(out), config=cfg, test=_paths(test), epochs=epochs,
                             batch_size=batch_size, lr=lr, seed=seed, eval_every=eval_every, max_train=max_train,
                             max_test=max_test, command=command, dataset_name=dataset_name, progress=progress,
                             stop_after=stop_after)
    return run(settings)
