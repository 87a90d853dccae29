"""Training codec models: Adam with linear warm-up and cosine decay, periodic test negative ELBO in bits/dim,
checkpoints and resume, CUDA when present, and multi-process data parallelism under ``torchrun``
(NCCL on GPUs, gloo on CPUs).

Photographs of different sizes (or any data, with ``crop``) are trained on square crops: each
epoch draws ``crops_per_epoch`` fresh random crops (seeded by the seed and the epoch, so a resumed
run draws the crops an uninterrupted one would), and ``valid`` images are evaluated on their
non-overlapping grid crops after every epoch (the same crops every time).

Checkpoints (the folder ``OUT.ckpt``) are safetensors plus JSON, no pickle (see
:func:`save_checkpoint`); the finished model is written as ``OUT.safetensors`` +
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

from .datasets import DataError, binarize, cut_crops, grid_crops, load_images, load_photos, luminance, plan_crops, png_shapes
from .registry import architecture
from .zoo import build_model, save_model


class TrainingError(DataError):
    """Settings or data that cannot be trained on (a ``ValueError`` and a ``BBCodecError``: the
    command line reports it in one line)."""


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
    crop: int = 0  # train on random crops of this size (0: the model's patch where the data are photos of mixed sizes)
    crops_per_epoch: int = 0  # random crops per epoch (0: as many as the training images' grid crops)
    valid: list = field(default_factory=list)  # validation images (any sizes): negative ELBO on their grid crops
    max_valid: int = 0  # use at most N validation crops, evenly spaced (0: all)
    grey: bool = False  # train on luminance (PIL convert("L")): a one-channel model
    flips: str = "h"  # random flips of training crops: "none", "h" (left-right) or "hv" (also upside down)
    init: str = ""  # start from this model's weights (name or path; its configuration is used)


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
    n = len(images) * images[0].numel()
    return {"bits_per_dim": (kl + nll) / n, "kl_bits_per_dim": kl / n}


FLIPS = {"none": (False, False), "h": (True, False), "hv": (True, True)}


def evenly(total: int, n: int):
    """Indices of ``n`` evenly spaced items of ``total`` (all of them where ``n`` is 0 or ``>= total``)."""
    if not n or n >= total:
        return torch.arange(total)
    return torch.arange(n) * total // n


def _to_model(x: torch.Tensor, channels: int, tiled: bool) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` or ``(N, C, H, W)`` as the model takes them: a tiled (fully
    convolutional) model ``(N, channels, H, W)``, grey converted to RGB or colour to luminance as
    needed; a whole-image model ``(N, H, W)`` (grey only)."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if channels == 1 and x.shape[1] == 3:
        x = luminance(x)
    elif channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] != channels:
        raise TrainingError(f"the model codes {channels}-channel images; the data has {x.shape[1]}")
    return x if tiled else x[:, 0]


def _line(record: dict, epochs: int, epoch_seconds: float) -> str:
    """The one line printed per epoch."""
    parts = [f"epoch {record['epoch']}/{epochs}: train {record['train_bits_per_dim']:.4f}"]
    for key in ("valid", "test"):
        if f"{key}_bits_per_dim" in record:
            parts.append(f"{key} {record[f'{key}_bits_per_dim']:.4f}")
    return ", ".join(parts) + f" bits/dim, {epoch_seconds:.1f} s (total {record['seconds']:.1f} s)"


def run(s: TrainSettings) -> dict:
    world, rank, local = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(s.seed + rank)
    config = dict(s.config)
    pixels = config.get("pixels", "uint8")
    tiled = architecture(config.get("arch")).tiled
    if s.flips not in FLIPS:
        raise TrainingError(f"flips must be one of {', '.join(FLIPS)}, not {s.flips!r}")
    if s.crop < 0 or s.crops_per_epoch < 0:
        raise TrainingError("crop and crops per epoch must not be negative")

    # photos: crops of images of any sizes (--crop, or PNGs that do not stack)
    shapes = None if s.crop else png_shapes(s.train)
    photo = bool(s.crop) or (shapes is not None and len(shapes) > 1)
    if s.grey and tiled:
        if config.setdefault("channels", 1) != 1:
            raise TrainingError(f"--grey trains a one-channel model; the configuration sets channels={config['channels']}")
    if photo and not tiled and s.crop:
        config.setdefault("height", s.crop)
        config.setdefault("width", s.crop)
    model = build_model(config).to(device)
    channels = getattr(model.config, "channels", 3) if tiled else 1
    grey = channels == 1
    if photo and not tiled and not s.grey:
        raise TrainingError(f"{config.get('arch')} codes greyscale images: train it on photos with --grey (luminance)")

    crop = crops_per_epoch = 0
    train_photos = train_images = None
    if photo:
        crop = s.crop or getattr(model.config, "patch", 0)
        if not crop and getattr(model.config, "height", 0) == getattr(model.config, "width", None):
            crop = model.config.height  # a whole-image model: crops of its size
        if not tiled:
            if (model.config.height, model.config.width) != (crop, crop):
                raise TrainingError(f"the model codes {model.config.height}x{model.config.width} images; "
                                    f"the crops are {crop}x{crop}")
        elif crop % 4:
            raise TrainingError(f"--crop must be a multiple of 4 for this model (its latents are at 1/4 scale), not {crop}")
        if not crop:
            raise TrainingError("give the crop size (--crop)")
        train_photos = load_photos(s.train, grey=grey)
        if s.max_train:
            train_photos = train_photos[: s.max_train]
        grid = sum((im.shape[-2] // crop) * (im.shape[-1] // crop) for im in train_photos)
        crops_per_epoch = s.crops_per_epoch or grid
        n_train = crops_per_epoch
        small = sum(min(im.shape[-2:]) < crop for im in train_photos)
        if small == len(train_photos):
            raise TrainingError(f"the training images are all smaller than the {crop}x{crop} crop")
        if rank == 0 and s.progress:
            pixels_total = sum(im[0].numel() for im in train_photos)
            print(f"training on {crops_per_epoch:,} random {crop}x{crop} crops per epoch from {len(train_photos)} "
                  f"{'grey' if grey else 'colour'} image(s) ({pixels_total:,} pixels), flips: {s.flips}"
                  + (f"; {small} smaller than the crop not used" if small else ""), flush=True)
    else:
        train_images = load_images(s.train)
        if s.max_train:
            train_images = train_images[: s.max_train]
        train_images = _to_model(train_images, channels, tiled) if (tiled or s.grey) else train_images
        n_train = len(train_images)
    test_images = load_images(s.test) if s.test else None
    if test_images is not None and s.max_test:
        test_images = test_images[: s.max_test]
    if test_images is not None:
        if tiled or s.grey:
            test_images = _to_model(test_images, channels, tiled)
        test_images = prepare(test_images, pixels, train=False)
    valid_photos = valid_images = None
    if s.valid:
        valid_photos = load_photos(s.valid, grey=grey)
        size = (crop, crop) if photo else tuple(train_images.shape[-2:])
        valid_images = grid_crops(valid_photos, size)
        if not len(valid_images):
            raise TrainingError(f"the validation images are all smaller than {size[0]}x{size[1]}")
        valid_images = prepare(_to_model(valid_images[evenly(len(valid_images), s.max_valid)], channels, tiled),
                               pixels, train=False)
        if rank == 0 and s.progress:
            print(f"validation: {len(valid_images):,} {size[0]}x{size[1]} grid crops of {len(valid_photos)} image(s)", flush=True)

    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    steps_per_epoch = n_train // s.batch_size
    if steps_per_epoch < 1:
        what = "crops per epoch" if photo else "training images"
        raise TrainingError(f"{n_train} {what} are fewer than one batch of {s.batch_size}")
    total = steps_per_epoch * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total))
    data_settings = {"crop": crop, "crops_per_epoch": crops_per_epoch, "grey": grey, "flips": s.flips if photo else "none"}
    ckpt_path = Path(s.out).with_suffix(".ckpt")
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    start_epoch, history, elapsed = 0, [], 0.0
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, device)
        if state.get("config") != model.config.to_dict():
            raise TrainingError(f"{ckpt_path} was made with another model configuration; remove it or choose another --out")
        if state.get("data", data_settings) != data_settings:
            raise TrainingError(f"{ckpt_path} was made with other crops ({state['data']}, now {data_settings}); "
                             "remove it or choose another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, history, elapsed = state["epoch"], list(state["history"]), float(state["elapsed"])
        if rank == 0:
            print(f"resumed from {ckpt_path} at epoch {start_epoch}", flush=True)
    elif s.init:  # fine-tuning: the starting weights (the optimizer starts afresh)
        from .zoo import load_model

        start = load_model(s.init).model
        if tiled and getattr(start.config, "channels", channels) != channels:  # image channels
            from .models.hierarchical_vae import luminance_state_dict

            if not (grey and start.config.channels == 3 and start.config.ARCH == "hierarchical_vae"):
                raise TrainingError(f"cannot start a {channels}-channel model from {s.init!r} "
                                    f"({start.config.channels} channels)")
            model.load_state_dict(luminance_state_dict(start))  # the colour model's grey mode
        elif tiled and getattr(start.config, "context", None) != model.config.context:
            from .models.hierarchical_vae import widened_context_state_dict

            if start.config.context > model.config.context:
                raise TrainingError(f"cannot start a {model.config.context}x{model.config.context} context window "
                                    f"from {s.init!r}'s wider {start.config.context}x{start.config.context}")
            model.load_state_dict(widened_context_state_dict(start, model.config.context))  # the same function
        else:
            model.load_state_dict(start.state_dict())

    per_rank = s.batch_size // world
    t_start = time.time() - elapsed
    last_epoch = s.epochs if not s.stop_after else min(s.epochs, start_epoch + s.stop_after)
    flips, vflips = FLIPS[s.flips]
    for epoch in range(start_epoch, last_epoch):
        t_epoch = time.time()
        model.train()
        # everything random in an epoch follows from (seed, epoch, rank): a resumed run repeats an uninterrupted one
        torch.manual_seed((s.seed * 100003 + epoch) * 1009 + rank)
        gen = torch.Generator().manual_seed(s.seed * 100003 + epoch)
        if photo:
            plan = plan_crops(train_photos, crop, steps_per_epoch * s.batch_size, gen, flips, vflips)
        else:
            perm = torch.randperm(len(train_images), generator=gen)
        it = range(steps_per_epoch)
        if rank == 0 and s.progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"epoch {epoch + 1}/{s.epochs}", leave=False, dynamic_ncols=True)
        running = 0.0
        for step in it:
            if photo:
                sel = torch.arange(step * s.batch_size, (step + 1) * s.batch_size)[rank::world][:per_rank]
                x = _to_model(cut_crops(train_photos, plan.subset(sel), crop), channels, tiled).to(device)
            else:
                idx = perm[step * s.batch_size: (step + 1) * s.batch_size][rank::world][:per_rank]
                x = train_images[idx].to(device)
            if pixels == "binary":
                x = (torch.rand(x.shape, device=device) < x.float() / 255).to(torch.uint8)
            out = ddp(x)
            loss = (out["kl_bits"] + out["nll_bits"]).mean() / x[0].numel()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
            opt.step()
            sched.step()
            running += loss.item()
            if rank == 0 and s.progress and step % 20 == 0:
                it.set_postfix(bits_per_dim=f"{running / (step + 1):.4f}")
        record = {"epoch": epoch + 1, "train_bits_per_dim": running / steps_per_epoch}
        if rank == 0 and ((epoch + 1) % s.eval_every == 0 or epoch + 1 == s.epochs):
            for key, images in (("valid", valid_images), ("test", test_images)):
                if images is not None:
                    torch.manual_seed(s.seed)  # the same latent samples at every evaluation
                    record.update({f"{key}_{k}": v for k, v in evaluate_float(model, images, device).items()})
        record["seconds"] = time.time() - t_start
        history.append(record)
        if rank == 0:
            print(_line(record, s.epochs, time.time() - t_epoch), flush=True)
            save_checkpoint(ckpt_path, {"config": model.config.to_dict(), "model": model.state_dict(),
                                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                        "epoch": epoch + 1, "history": history, "elapsed": time.time() - t_start,
                                        "data": data_settings})
    result = {"history": history, "finished": last_epoch == s.epochs}
    if rank == 0 and last_epoch == s.epochs:
        meta = {
            "dataset": s.dataset_name or ", ".join(str(p) for p in s.train),
            "training_images": len(train_photos) if photo else len(train_images),
            "training_command": s.command,
            "training_seconds": round(time.time() - t_start, 1),
            "hardware": hardware() + (f", {world} processes" if world > 1 else ""),
            **({"initialised_from": s.init} if s.init else {}),
            "epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr,
            "grey": grey,
        }
        if photo:
            meta.update({"training_pixels": sum(im[0].numel() for im in train_photos), "crop": crop,
                         "crops_per_epoch": crops_per_epoch, "flips": s.flips})
        if valid_images is not None:
            meta.update({"validation": ", ".join(str(p) for p in s.valid), "validation_crops": len(valid_images),
                         "valid_bits_per_dim": [h.get("valid_bits_per_dim") for h in history]})
        meta["history"] = history
        last = history[-1] if history else {}
        if "test_bits_per_dim" in last:
            meta["test_bits_per_dim_float"] = last["test_bits_per_dim"]
        if "valid_bits_per_dim" in last:
            meta["valid_bits_per_dim_float"] = last["valid_bits_per_dim"]
        if test_images is not None:
            sample = test_images
        elif photo or valid_photos is not None:
            sample = _coding_sample(valid_photos or train_photos, getattr(model.config, "patch", None) or crop, crop)
            sample = prepare(_to_model(sample, channels, tiled), pixels, train=False)
        else:
            sample = prepare(train_images[:256], pixels, train=False)
        meta["coding"] = measured_coding(model, sample)
        result["sha256"] = save_model(model, Path(s.out), meta)
        result["meta"] = meta
    if world > 1:
        dist.barrier()
    return result


def _coding_sample(photos, patch: int, crop: int, n: int = 256) -> torch.Tensor:
    """``n`` grid crops of ``photos`` spread over them, of the model's patch size (else of the crop
    size), for measuring the coding defaults."""
    sample = grid_crops(photos, patch)
    if not len(sample) and crop:
        sample = grid_crops(photos, crop)
    return sample[evenly(len(sample), n)]


def _split_tensors(obj, tensors: dict, prefix: str = "t"):
    """``obj`` (nested dicts, lists, tensors and plain values) as JSON-able values, its tensors
    moved to ``tensors`` under path-like names and replaced by ``{"tensor": name}``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"tensor": prefix}
    if isinstance(obj, dict):  # keys may be ints (optimizer state): kept as [key, value] pairs
        return {"items": [[k, _split_tensors(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj, tensors: dict, device):
    if isinstance(obj, dict) and set(obj) == {"tensor"}:
        return tensors[obj["tensor"]].to(device)
    if isinstance(obj, dict):
        return {k: _join_tensors(v, tensors, device) for k, v in obj["items"]}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors, device) for v in obj]
    return obj


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` (model and optimizer state dicts, schedule, history) to the folder ``path``:
    its tensors in ``state.safetensors``, the rest in ``state.json`` (no pickle). The JSON, written
    last, holds the SHA-256 of the tensors file, so a write cut short is detected on loading."""
    import hashlib
    import json

    from safetensors.torch import save_file

    path = Path(path)
    if path.is_file():  # a checkpoint of the earlier single-file format: replaced
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict = {}
    doc = {"format": 1, "state": _split_tensors(state, tensors)}
    save_file(tensors, str(path / "state.safetensors.tmp"))
    doc["tensors_sha256"] = hashlib.sha256((path / "state.safetensors.tmp").read_bytes()).hexdigest()
    (path / "state.json.tmp").write_text(json.dumps(doc))
    (path / "state.safetensors.tmp").replace(path / "state.safetensors")
    (path / "state.json.tmp").replace(path / "state.json")


def load_checkpoint(path: Path, device) -> dict:
    """Inverse of :func:`save_checkpoint`; also reads the earlier single-file format (a torch file
    of tensors and plain values, loaded with ``weights_only=True``)."""
    import hashlib
    import json

    from safetensors.torch import load_file

    path = Path(path)
    if path.is_file():
        return torch.load(path, map_location=device, weights_only=True)
    doc = json.loads((path / "state.json").read_text())
    if hashlib.sha256((path / "state.safetensors").read_bytes()).hexdigest() != doc["tensors_sha256"]:
        raise TrainingError(f"{path}: the checkpoint's tensors do not match its state.json (a write was cut short)")
    return _join_tensors(doc["state"], load_file(str(path / "state.safetensors")), device)


def measured_coding(model, images: torch.Tensor) -> dict:
    """The coding defaults a trained model's JSON records: its architecture's (tiles, pyramid,
    ...), then the start-up estimates, lanes and plain start measured by coding a sample of
    ``images`` with the exact networks (see :func:`bbcodec.image_codecs.base.coding_defaults`)."""
    from .image_codecs.base import coding_defaults
    from .registry import architecture
    from .zoo import LoadedModel

    model = model.eval().cpu()
    arch = architecture(model.config.to_dict().get("arch"))
    loaded = LoadedModel("training", model, model.config.to_dict(), {"coding": dict(arch.coding)})
    patch = getattr(model.config, "patch", None)
    sample = images[:256]
    if arch.tiled and patch and tuple(sample.shape[-2:]) != (patch, patch):
        sample = sample[..., :patch, :patch]  # the estimates are per training patch
    from .layout import Layout

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
          progress: bool = True, command: str | None = None, valid=None, crop: int = 0, crops_per_epoch: int = 0,
          max_valid: int = 0, grey: bool = False, flips: str = "h", init: str = "") -> dict:
    """Train a codec model, as ``bbcodec train DATA... -o OUT`` does, and write ``OUT.safetensors`` +
    ``OUT.json`` (checkpointed in ``OUT.ckpt``; calling it again with the same settings resumes).

    ``data``, ``test`` and ``valid`` are a path or a list of paths (MNIST IDX, .npy, CIFAR-10
    .bin[.gz], PNG files and folders). ``config`` holds architecture settings (``bbcodec train --set KEY=VALUE``), e.g.
    ``{"latent_dim": 32}``; ``arch`` (default ``"context_vae"``) and ``pixels`` (``"uint8"`` or
    ``"binary"``, which also selects the Bernoulli likelihood) may be given here or in ``config``.

    Photographs: where ``data`` are PNGs of different sizes, or ``crop`` is given, every epoch
    trains on ``crops_per_epoch`` fresh random ``crop x crop`` crops (default crop: the model's
    ``patch``; default count: as many as the images' non-overlapping crops), flipped as ``flips``
    says (``"none"``, ``"h"``, ``"hv"``). ``valid`` (images of any sizes) is evaluated after every
    epoch on its grid crops (at most ``max_valid``, evenly spaced). ``grey`` trains a one-channel
    model on the luminance. ``init`` (a model name or path) fine-tunes: training starts from its
    weights and configuration. Returns :func:`run`'s result: ``history`` (per epoch), ``finished``, and once finished the
    weights' ``sha256`` and the model's ``meta``. Install the result with
    ``bbcodec models --install OUT`` (or :func:`bbcodec.zoo.install_model`)."""
    extra = dict(config or {})
    if init:  # fine-tuning: the starting model's configuration, with any settings given on top
        from .zoo import load_model

        extra = {**load_model(init).config, **{k: v for k, v in extra.items() if k not in ("arch", "pixels")}}
        if grey and extra.get("channels", 1) != 1:  # a luminance model from a colour one's grey mode
            extra["channels"] = 1
        arch = pixels = None
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
                             stop_after=stop_after, valid=_paths(valid), crop=crop, crops_per_epoch=crops_per_epoch,
                             max_valid=max_valid, grey=grey, flips=flips, init=str(init or ""))
    return run(settings)
