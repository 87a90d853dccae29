"""Model files and the embedded model zoo.

A model is a pair of files with a common stem: ``NAME.safetensors`` (weights, no pickle) and
``NAME.json`` (architecture config plus metadata: dataset, test bits/dim, how it was trained).
Embedded models live in ``bbcodec/zoo/``; their card is ``NAME.md``. A model's identity is its
name plus the SHA-256 of its weights file, which compressed files record.

The user's own models live in the models directories (:func:`user_model_dirs`): the paths in
``$BBCODEC_MODELS`` (separated by ``os.pathsep``), or else ``$XDG_DATA_HOME/bbcodec/models``
(``~/.local/share/bbcodec/models``). :func:`install_model` copies a model there; a name is looked
up among the embedded models first, then in those directories in order; decompression also finds
a file's model by the SHA-256 of its weights (:func:`find_model_by_sha256`), whatever its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BBCodecError

if TYPE_CHECKING:  # torch and safetensors are imported where needed: `bbcodec models` stays light
    import torch

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
MODELS_ENV = "BBCODEC_MODELS"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")  # a model name: a plain file stem

# the embedded models :func:`bbcodec.api.default_model` chooses; earlier defaults stay embedded for their files
MNIST_MODELS = {"uint8": "mnist-uint8-v2", "binary": "mnist-binary-v2"}
COLOUR_MODEL = "cifar10-rgb"  # small colour images (CIFAR-sized thumbnails)
PHOTO_MODEL = "photo-rgb-v2"  # photographs: images at least PHOTO_SIZE pixels on the shorter side
GREY_PHOTO_MODEL = "photo-grey"  # greyscale photographs (a luminance model)
PHOTO_SIZE = 64


def default_roles() -> dict[str, str]:
    """Embedded model name -> the images it is the default for."""
    return {MNIST_MODELS["uint8"]: "8-bit 28x28 images", MNIST_MODELS["binary"]: "binary 28x28 images",
            PHOTO_MODEL: f"colour images from {PHOTO_SIZE} pixels on the shorter side",
            GREY_PHOTO_MODEL: f"greyscale images from {PHOTO_SIZE} pixels on the shorter side",
            COLOUR_MODEL: "smaller colour and greyscale images"}


class ModelNotFound(BBCodecError, LookupError):
    """No embedded model of that name and no model file at that path."""


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    config: dict
    meta: dict = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None


def build_model(config: dict) -> "torch.nn.Module":
    """The network a model config describes (its ``arch``: see :mod:`bbcodec.registry`)."""
    from .registry import architecture

    return architecture(config.get("arch")).build(config)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_SHA_CACHE: dict = {}  # (resolved path, mtime_ns, size) -> SHA-256 of the file, for this process


def _cache_key(path: Path):
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def cached_sha256(path: Path) -> str:
    """The file's SHA-256, hashed once per (path, modification time, size) in this process."""
    key = _cache_key(path)
    sha = _SHA_CACHE.get(key)
    if sha is None:
        sha = _SHA_CACHE[key] = file_sha256(path)
    return sha


def _remember_sha256(path: Path, data: bytes) -> str:
    """The SHA-256 of ``data``, just read from (or written to) ``path``, remembered for ``path``."""
    sha = hashlib.sha256(data).hexdigest()
    try:
        key = _cache_key(path)
    except OSError:
        return sha
    if key[2] == len(data):
        _SHA_CACHE[key] = sha
    return sha


def save_model(model: torch.nn.Module, stem: Path, meta: dict | None = None) -> str:
    """Write ``stem.safetensors`` and ``stem.json``; returns the weights' SHA-256."""
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = _file(stem, ".safetensors")
    tmp = weights.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(weights)
    doc = {"config": model.config.to_dict(), "meta": meta or {}}
    _file(stem, ".json").write_text(json.dumps(doc, indent=2) + "\n")
    return file_sha256(weights)


def _file(stem: Path, ext: str) -> Path:
    """``stem`` + ``ext``: ``my.model`` -> ``my.model.json`` (``with_suffix`` would drop ``.model``)."""
    return stem.with_name(stem.name + ext)


def _is_model(stem: Path) -> bool:
    return _file(stem, ".safetensors").is_file() and _file(stem, ".json").is_file()


def _stem_of(path) -> Path:
    """The stem a model path names: ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    p = Path(str(path)).expanduser()
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def is_model_name(name) -> bool:
    """Whether ``name`` can be a model's name: a plain file stem (no directory, no leading dot)."""
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and not name.endswith((".safetensors", ".json"))


def user_model_dirs() -> list[Path]:
    """The directories of the user's own models, searched in order; :func:`install_model` writes
    into the first. ``$BBCODEC_MODELS`` (paths separated by ``os.pathsep``) if set and not empty,
    else ``$XDG_DATA_HOME/bbcodec/models`` (an absolute ``XDG_DATA_HOME``), else
    ``~/.local/share/bbcodec/models``. They need not exist."""
    env = os.environ.get(MODELS_ENV, "")
    dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    if dirs:
        return dirs
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return [base / "bbcodec" / "models"]


def find_model_by_name(name) -> Path | None:
    """The stem of the model called ``name``: embedded first, then the user's directories in
    order; None if there is none (or ``name`` is not a plain model name). Never a path."""
    if not is_model_name(name):
        return None
    for d in [ZOO_DIR] + user_model_dirs():
        stem = d / name
        if _is_model(stem):
            return stem
    return None


def _model_stems() -> list[tuple[str, Path]]:
    """``(where, stem)`` of every model: ``"embedded"`` ones, then each user directory's, by name."""
    out = [("embedded", ZOO_DIR / name) for name in embedded_models()]
    for d in user_model_dirs():
        try:
            stems = sorted(p.with_suffix("") for p in d.glob("*.safetensors"))
        except OSError:
            continue
        out += [("user", stem) for stem in stems if is_model_name(stem.name) and _is_model(stem)]
    return out


def find_model_by_sha256(sha256: str) -> Path | None:
    """The stem of a model whose weights file has this SHA-256 (hex): embedded models first, then
    the user's directories in order; None if there is none. Each file is hashed once per process
    (and again only if it changes)."""
    sha256 = str(sha256).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return None
    for _, stem in _model_stems():
        try:
            if cached_sha256(_file(stem, ".safetensors")) == sha256:
                return stem
        except OSError:
            continue
    return None


@dataclass
class InstalledModel:
    """One model file pair that :func:`installed_models` found."""
    name: str
    path: Path  # the stem: the files are path + ".safetensors", ".json" (and ".md", a card)
    sha256: str
    meta: dict
    where: str  # "embedded" or "user"
    config: dict = field(default_factory=dict)
    size_bytes: int = 0
    shadowed: bool = False  # an earlier model has the same name, so the name finds that one


def installed_models() -> list[InstalledModel]:
    """The embedded models, then the user's (directory by directory, by name), with their weights'
    SHA-256 and metadata. Unreadable model files are left out."""
    out, seen = [], set()
    for where, stem in _model_stems():
        try:
            doc = json.loads(_file(stem, ".json").read_text())
            weights = _file(stem, ".safetensors")
            entry = InstalledModel(stem.name, stem, cached_sha256(weights), dict(doc.get("meta") or {}), where,
                                   dict(doc.get("config") or {}), weights.stat().st_size, stem.name in seen)
        except (OSError, ValueError, AttributeError):
            continue
        seen.add(stem.name)
        out.append(entry)
    return out


def _resolve(name_or_path) -> tuple[str, Path]:
    p = Path(str(name_or_path))
    candidates = []
    if p.suffix in (".safetensors", ".json"):
        candidates.append(p.with_suffix(""))
    candidates.append(p)
    for stem in candidates:
        if _is_model(stem):
            return stem.name, stem
    stem = find_model_by_name(str(name_or_path))
    if stem is not None:
        return stem.name, stem
    raise ModelNotFound(f"no model {str(name_or_path)!r} (not an embedded or installed model's name, and no "
                        f"NAME.safetensors + NAME.json at that path); see `bbcodec models`")


def _build_loaded(name: str, stem: Path, doc: dict, data: bytes, sha256: str, device="cpu") -> LoadedModel:
    from safetensors.torch import load as load_bytes

    model = build_model(doc["config"])
    model.load_state_dict(load_bytes(data))
    model.eval().to(device)
    return LoadedModel(name, model, doc["config"], doc.get("meta", {}), sha256, stem)


def load_model(name_or_path, device="cpu") -> LoadedModel:
    """Load a model by path (with or without extension), or by name: an embedded model, then the
    user's models (:func:`user_model_dirs`). Its ``sha256`` is that of the very bytes loaded."""
    name, stem = _resolve(name_or_path)
    doc = json.loads(_file(stem, ".json").read_text())
    weights = _file(stem, ".safetensors")
    data = weights.read_bytes()
    return _build_loaded(name, stem, doc, data, _remember_sha256(weights, data), device)


def _atomic_copy(data: bytes, dst: Path) -> None:
    """Write ``data`` to ``dst`` by way of a temporary file in its directory (never a partial file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def install_model(path, name: str | None = None, force: bool = False) -> Path:
    """Copy the model at ``path`` (``STEM``, ``STEM.safetensors`` or ``STEM.json``; and
    ``STEM.md``, its card, if present) into the first user models directory as ``name`` (default:
    its stem), after checking that its weights load. Installing the same weights again is a no-op
    (the JSON and card are refreshed); a different model of that name is replaced only with
    ``force``; an embedded model's name cannot be taken. Returns the installed stem."""
    stem = _stem_of(path)
    if not _is_model(stem):
        raise ModelNotFound(f"{str(path)!r}: no model there (need {stem.name}.safetensors and {stem.name}.json)")
    name = stem.name if name is None else name
    if not is_model_name(name):
        raise BBCodecError(f"{name!r} cannot be a model name (letters, digits, '_', '.', '+' and '-'; "
                           "not starting with '.' or '-')")
    try:
        doc_bytes = _file(stem, ".json").read_bytes()
        doc = json.loads(doc_bytes)
        data = _file(stem, ".safetensors").read_bytes()
        card = _file(stem, ".md").read_bytes() if _file(stem, ".md").is_file() else None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BBCodecError(f"{str(path)!r}: cannot read the model: {exc}") from None
    sha = hashlib.sha256(data).hexdigest()
    try:
        _build_loaded(name, stem, doc, data, sha)  # the weights must load into the model they describe
    except Exception as exc:  # noqa: BLE001 - any failure here means the files are not a usable model
        raise BBCodecError(f"{str(path)!r}: not a usable model: {type(exc).__name__}: {exc}") from None

    if _file(ZOO_DIR / name, ".safetensors").is_file():
        if cached_sha256(_file(ZOO_DIR / name, ".safetensors")) == sha:
            return ZOO_DIR / name  # it is that embedded model: nothing to install
        raise BBCodecError(f"{name!r} is an embedded model's name; install this model under another (--name)")
    dest_dir = user_model_dirs()[0]
    dest = dest_dir / name
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        weights = _file(dest, ".safetensors")
        if weights.exists():
            if weights.resolve() == _file(stem, ".safetensors").resolve():
                return dest  # installing the installed files themselves
            old = cached_sha256(weights)
            if old != sha and not force:
                raise BBCodecError(f"another model named {name!r} is installed in {dest_dir} (weights {old[:12]}, "
                                   f"this one {sha[:12]}); -f replaces it, --name installs this one under another name")
        # the weights, which make the pair a model (and identify it), last
        _atomic_copy(doc_bytes, _file(dest, ".json"))
        if card is not None:
            _atomic_copy(card, _file(dest, ".md"))
        elif _file(dest, ".md").exists():
            _file(dest, ".md").unlink()  # the replaced model's card
        if not (weights.exists() and cached_sha256(weights) == sha):
            _atomic_copy(data, weights)
        _remember_sha256(weights, data)
    except OSError as exc:
        raise BBCodecError(f"cannot install {name!r} in {dest_dir}: {exc}") from None
    return dest


def embedded_models() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.safetensors") if p.with_suffix(".json").exists())


def model_info(name: str) -> dict:
    stem = ZOO_DIR / name
    doc = json.loads(_file(stem, ".json").read_text())
    weights = _file(stem, ".safetensors")
    return {"name": name, "size_bytes": weights.stat().st_size, **doc.get("meta", {}),
            "pixels": doc["config"].get("pixels"), "arch": doc["config"].get("arch")}
