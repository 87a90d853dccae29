"""Model configurations: dataclasses that round-trip through the JSON of a model file."""

from __future__ import annotations

import dataclasses


class ModelConfig:
    """Mixin for dataclass configs: ``from_dict`` (rejecting unknown keys) and ``to_dict``
    (with the architecture name under ``"arch"``). Subclasses set ``ARCH``."""

    ARCH = ""

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"arch"}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return {"arch": self.ARCH, **dataclasses.asdict(self)}
