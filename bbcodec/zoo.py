"""Model files and the embedded model zoo.

A model is a pair of files with a common stem: ``NAME.safetensors`` (weights, no pickle) and
``NAME.json`` (architecture config plus metadata: dataset, test bits/dim, how it was trained).
Embedded models live in ``bbcodec/zoo/``; their card is ``NAME.md``. A model's identity is its
name plus the SHA-256 of its weights file, which compressed files record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BBCodecError

if TYPE_CHECKING:  # torch and safetensors are imported where needed: `bbcodec models` stays light
    import torch

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


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


def build_model(config: dict) -> torch.nn.Module:
    arch = config.get("arch")
    if arch == "context_vae":
        from .models.context_vae import ContextVAE, ContextVAEConfig

        return ContextVAE(ContextVAEConfig.from_dict(config))
    if arch == "hierarchical_vae":
        from .models.hierarchical_vae import HierarchicalVAE, HierarchicalVAEConfig

        return HierarchicalVAE(HierarchicalVAEConfig.from_dict(config))
    raise ValueError(f"unknown model architecture {arch!r}")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_model(model: torch.nn.Module, stem: Path, meta: dict | None = None) -> str:
    """Write ``stem.safetensors`` and ``stem.json``; returns the weights' SHA-256."""
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = stem.with_suffix(".safetensors")
    tmp = weights.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(weights)
    doc = {"config": model.config.to_dict(), "meta": meta or {}}
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    return file_sha256(weights)


def _resolve(name_or_path) -> tuple[str, Path]:
    p = Path(str(name_or_path))
    candidates = []
    if p.suffix in (".safetensors", ".json"):
        candidates.append(p.with_suffix(""))
    candidates += [p, ZOO_DIR / str(name_or_path)]
    for stem in candidates:
        if stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file():
            return stem.name, stem
    raise ModelNotFound(f"no model {str(name_or_path)!r} (not an embedded model name, and no "
                        f"NAME.safetensors + NAME.json at that path); see `bbcodec models`")


def load_model(name_or_path, device="cpu") -> LoadedModel:
    """Load an embedded model by name, or a model file by path (with or without extension)."""
    from safetensors.torch import load_file

    name, stem = _resolve(name_or_path)
    doc = json.loads(stem.with_suffix(".json").read_text())
    model = build_model(doc["config"])
    weights = stem.with_suffix(".safetensors")
    model.load_state_dict(load_file(str(weights)))
    model.eval().to(device)
    return LoadedModel(name, model, doc["config"], doc.get("meta", {}), file_sha256(weights), stem)


def embedded_models() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.safetensors") if p.with_suffix(".json").exists())


def model_info(name: str) -> dict:
    stem = ZOO_DIR / name
    doc = json.loads(stem.with_suffix(".json").read_text())
    weights = stem.with_suffix(".safetensors")
    return {"name": name, "size_bytes": weights.stat().st_size, **doc.get("meta", {}),
            "pixels": doc["config"].get("pixels"), "arch": doc["config"].get("arch")}
