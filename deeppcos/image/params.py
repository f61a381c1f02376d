"""The image branch's parameters (no TensorFlow import: configs are validated before training)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deeppcos.image.preprocess import PreprocessConfig
from deeppcos.image.specs import BACKBONES, WEIGHT_SUFFIXES, backbone_spec


class ImageParams(BaseModel):
    """Settings of ``ImageBranch``. ``preprocess.image_size`` and ``preprocess.channels`` always
    follow ``image_size`` and the backbone (1 channel for ``compact``, 3 for the others)."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = "compact"
    weights: str | None = Field(
        None, description="'imagenet', null (random init) or a local .h5/.weights.h5/.keras file"
    )
    mode: Literal["frozen", "finetune", "scratch"] | None = Field(
        None,
        description="'frozen': a pretrained backbone embeds every image once (cached on disk) "
        "and a logistic head trains per fold; 'finetune': a new head, then the top blocks "
        "unfrozen; 'scratch': the whole network from random weights. Default: 'finetune' with "
        "weights, 'scratch' without",
    )
    width: float = Field(
        1.0, gt=0, le=2, description="width multiplier (Keras' alpha) of MobileNet v1"
    )
    head_c: float = Field(
        1.0, gt=0, le=1e6, description="frozen mode: the logistic head's inverse L2 strength"
    )
    tta: Literal[1, 2, 4] = Field(
        1,
        description="frozen mode: views averaged per image embedding (1 = none, 2 = + a "
        "left-right flip, 4 = + a 90% centre crop of each)",
    )
    pool_grid: int = Field(
        1,
        ge=1,
        le=8,
        description="cells per side over which the backbone's feature maps are averaged into "
        "the embedding: 1 = global average pooling; 4 = a 4 x 4 grid, which keeps where in the "
        "image a feature is (the heart's size on a chest X-ray)",
    )
    pool_layers: list[str] = Field(
        default_factory=list,
        description="backbone layers pooled beside its last output (for MobileNet v1 e.g. "
        "conv_pw_11_relu): earlier, finer features in the embedding",
    )
    embedding_cache: str | None = Field(
        None,
        description="frozen mode: folder of the embedding cache (default $DEEPPCOS_CACHE, else "
        "~/.cache/deeppcos)",
    )
    chunk_size: int = Field(256, ge=1, le=100_000, description="frozen mode: images per chunk")
    image_size: int = Field(128, ge=16, le=1024)
    batch_size: int = Field(32, ge=1, le=4096)
    epochs_head: int = Field(8, ge=0, le=1000)
    epochs_finetune: int = Field(4, ge=0, le=1000)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    finetune_learning_rate: float = Field(1e-4, gt=0, le=1)
    unfreeze_fraction: float = Field(0.2, ge=0, le=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    augment_strength: float = Field(1.0, ge=0, le=3)
    patience: int = Field(3, ge=1, le=1000)
    class_weight: bool = True
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    cache_dir: str | None = None
    max_epochs_compact: int = Field(20, ge=1, le=1000)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        name = value.strip().lower()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r}; choose one of {sorted(BACKBONES)}")
        return name

    @field_validator("weights")
    @classmethod
    def _weights_form(cls, value: str | None) -> str | None:
        if value is None or value == "imagenet":
            return value
        if not value.endswith(WEIGHT_SUFFIXES):
            raise ValueError(
                f"weights must be 'imagenet', null or a path ending in {list(WEIGHT_SUFFIXES)}; "
                f"got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImageParams:
        spec = backbone_spec(self.backbone)
        if self.image_size < spec.min_size:
            raise ValueError(
                f"backbone {self.backbone!r} needs image_size >= {spec.min_size} px; "
                f"got {self.image_size}"
            )
        if self.weights == "imagenet" and spec.imagenet is None:
            raise ValueError(
                f"backbone {self.backbone!r} has no ImageNet weights; use weights: null "
                "(train from scratch) or a pretrained backbone such as 'mobilenet'"
            )
        if not spec.widths and self.width != 1.0:
            raise ValueError(f"backbone {self.backbone!r} has no width multiplier; drop 'width'")
        if spec.widths and self.weights == "imagenet" and self.width not in spec.widths:
            raise ValueError(
                f"backbone {self.backbone!r} has ImageNet weights for widths "
                f"{list(spec.widths)}; got width {self.width}"
            )
        if self.mode is None:
            self.mode = "scratch" if self.weights is None else "finetune"
        if self.mode in ("frozen", "finetune") and self.weights is None:
            raise ValueError(
                f"mode {self.mode!r} needs pretrained weights ('imagenet' or a file); with "
                "weights: null use mode: scratch"
            )
        if self.tta != 1 and self.mode != "frozen":
            raise ValueError(
                f"tta (views averaged per embedding) applies to mode 'frozen' only; got tta "
                f"{self.tta} with mode {self.mode!r}"
            )
        if self.mode == "scratch" and self.weights is not None:
            raise ValueError(
                "mode 'scratch' trains from random weights; drop 'weights' or use mode "
                "'finetune' or 'frozen'"
            )
        self.preprocess = self.preprocess.model_copy(
            update={"image_size": self.image_size, "channels": spec.channels}
        )
        return self

    @property
    def pretrained(self) -> bool:
        """Pretrained backbones train in two phases (frozen, then top blocks unfrozen)."""
        return self.weights is not None

    @property
    def pooling(self) -> dict[str, Any]:
        """``build_model``'s pooling arguments."""
        return {"pool_grid": self.pool_grid, "pool_layers": tuple(self.pool_layers)}

    @property
    def pooling_key(self) -> str:
        """The pooling as cache-key text; empty for global average pooling, the default (so
        embeddings cached before the option existed stay valid)."""
        if self.pool_grid == 1 and not self.pool_layers:
            return ""
        return json.dumps({"grid": self.pool_grid, "layers": list(self.pool_layers)})

    @property
    def frozen(self) -> bool:
        """Embeddings of a pretrained backbone with a logistic head: no network training."""
        return self.mode == "frozen"
