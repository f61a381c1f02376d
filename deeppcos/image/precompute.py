"""A whole cohort's frozen embeddings computed ahead of training (``deeppcos embed``): in this
process chunk by chunk, or on a Dask cluster, one task per chunk. Above both the branch (whose
settings key the cache) and :mod:`deeppcos.image.frozen` (the cache and the extraction)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeppcos.image.frozen import Progress, embed_distributed, embed_table, image_keys

__all__ = ["Precomputed", "precompute"]


@dataclass
class Precomputed:
    """What :func:`precompute` did."""

    images: int
    cached_before: int
    embedded: int
    seconds: float
    cache: Path
    workers: int

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else float("nan")


def precompute(
    cohort: Any,
    params: Any,
    *,
    scheduler: str | None = None,
    client: Any = None,
    progress: Progress | None = None,
) -> Precomputed:
    """Embed every image of ``cohort`` under the frozen-mode ``params`` (an ``ImageParams``)
    into the cache, so training (and tuning) pays nothing for it: in this process, chunk by
    chunk, or on a Dask cluster (``scheduler``: an address, a scheduler file or ``local:N``;
    or a ``distributed.Client``), one task per chunk. Workers need the image files and the
    weights file at the same paths, and the cache folder on a shared file system."""

    from deeppcos.image.backbones import resolve_weights
    from deeppcos.image.branch import ImageBranch
    from deeppcos.image.pipeline import images_of, table_from

    branch = ImageBranch(params)
    branch.embedding_key_ = branch.embedding_key()
    cache = branch.embedding_cache()
    table = table_from(images_of(cohort, None))
    before = sum(v is not None for v in cache.load(image_keys(table)))
    workers = 1
    if scheduler is None and client is None:
        import keras

        from deeppcos.image.backbones import build_model

        model, embedding = build_model(
            params.backbone, params.image_size, params.weights, width=params.width, **params.pooling
        )
        embedder = keras.Model(model.input, model.get_layer(embedding).output)
        start = time.perf_counter()  # the images, not the model's construction
        embed_table(
            table,
            embedder,
            params.preprocess,
            batch_size=params.batch_size,
            tta=params.tta,
            cache=cache,
            chunk_size=params.chunk_size,
            progress=progress,
        )
    else:
        from deeppcos.inference.cluster import dask_client

        own, cluster = dask_client(client, scheduler)
        start = time.perf_counter()  # workers build their model inside their first task
        try:
            workers = max(1, len(own.scheduler_info(n_workers=-1).get("workers", {})))
            resolve_weights(params.backbone, params.weights, params.width)  # fail here, not there
            # The setting itself ('imagenet' or a path), as the branch builds it: Keras adds
            # layers to some backbones (EfficientNet's rescaling) only when it loads 'imagenet'.
            model = {
                "backbone": params.backbone,
                "width": params.width,
                "weights": params.weights,
                "image_size": params.image_size,
                "tta": params.tta,
                **params.pooling,
            }
            embed_distributed(
                table,
                model,
                params.preprocess,
                cache,
                batch_size=params.batch_size,
                chunk_size=params.chunk_size,
                client=own,
                progress=progress,
            )
        finally:
            if client is None:
                own.close()
                if cluster is not None:
                    cluster.close()
    return Precomputed(
        images=len(table),
        cached_before=before,
        embedded=len(table) - before,
        seconds=time.perf_counter() - start,
        cache=cache.folder,
        workers=workers,
    )
