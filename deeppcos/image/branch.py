"""The image branch: a Keras CNN over a cohort's images, with the branch contract
(fit / predict_proba / transform / save / load) shared with the tabular branch.

Training
--------
* Per-image labels: the images table's own ``label`` where present, else the patient's label;
  images without either are skipped.
* ``mode: frozen`` (:mod:`deeppcos.image.frozen`): the pretrained backbone embeds every image
  once (cached on disk by content), a logistic head is fitted on the training images'
  embeddings, and its weights become the model's last layer; no network is trained, and no
  images are held out for early stopping.
* Pretrained backbones (``weights`` not null) train in two phases: (1) the backbone frozen, a new
  head trained at ``learning_rate`` for ``epochs_head`` epochs; (2) the top blocks unfrozen
  (rule in ``deeppcos.image.specs``), ``epochs_finetune`` more at ``finetune_learning_rate``.
  If phase 2 never beats phase 1 on validation, phase 1's weights are kept.
* Randomly initialised backbones train end to end in one phase: ``max_epochs_compact`` epochs
  for ``compact``, ``epochs_head + epochs_finetune`` for the others.
* With ``val_ids``, each phase early-stops on validation ROC AUC (``patience`` epochs) and
  restores its best weights; if the validation images hold one class only, on validation loss.
  Training from scratch gets a warm-up: early stopping starts watching after ``patience``
  epochs (measured on the synthetic cohort: without it, noisy first epochs stopped the compact
  CNN after 4 epochs at held-out AUC 0.68; with it, 0.76-0.86 over four seeds).
* Class weights n / (2·n_class) from the training images (``class_weight``); seeds fixed with
  ``keras.utils.set_random_seed``; "mixed_float16" only where a GPU is visible; with more than
  one accelerator, ``tf.distribute.MirroredStrategy`` over all of them (``replicas_``).

Aggregation
-----------
A patient's probability is the MEAN of their images' probabilities, and their embedding the
mean of their images' embeddings (the globally pooled backbone features): both ovaries count
equally, and a patient with more images is not scored as more certain. Patients without images
get NaN, which the fusion treats as "image modality missing".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from deeppcos.data.cohort import Cohort
from deeppcos.exceptions import DataFileError, DeepPCOSError, SchemaError, require_fitted
from deeppcos.image.params import ImageParams
from deeppcos.image.preprocess import PreprocessConfig
from deeppcos.runs.persist import read_meta, write_meta

if TYPE_CHECKING:  # TensorFlow loads only when a branch trains or predicts
    import keras

    from deeppcos.image.pipeline import ImageTable

__all__ = ["ImageBranch", "ImageParams"]

MODEL_FILE = "model.keras"
OUTPUT_LAYER = "p_image"  # backbones.OUTPUT_LAYER (not imported: it would load Keras)
META_FILE = "image_branch.json"
FORMAT = "deeppcos-image-branch"
FORMAT_VERSION = 1
HISTORY_KEYS = ("loss", "auc", "val_loss", "val_auc")

Progress = Callable[[int, int], None]


class ImageBranch:
    """A CNN on the cohort's images (see the module docstring for the training rules).

    Fitted attributes: ``model_`` (the Keras model: [0, 255] pixels in, P(label = 1) out),
    ``embedding_layer_name_``, ``backbone_layer_name_``, ``history_`` (``{phase: {"loss" |
    "auc" | "val_loss" | "val_auc": [per epoch]}}``, phases ``end_to_end`` or ``head`` and
    ``finetune``), ``unfrozen_blocks_`` (blocks phase 2 trained), ``monitor_`` (what early
    stopping watched, or None), ``class_weight_``, ``n_train_images_``, ``n_val_images_`` and
    ``mixed_precision_``.
    """

    def __init__(self, params: ImageParams | None = None, seed: int = 0) -> None:
        _require_keras()
        self.params = params if params is not None else ImageParams()
        self.seed = seed
        # Whether frozen mode may add embeddings to the on-disk cache (a loaded branch may not).
        self.cache_writes = True

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """Preprocessing as used by this branch (size and channels follow the backbone)."""
        return self.params.preprocess

    # --- training --------------------------------------------------------------------------

    def fit(
        self,
        cohort: Cohort,
        train_ids: Sequence[str],
        val_ids: Sequence[str] | None = None,
        progress: Progress | None = None,
        callbacks: Sequence[Any] = (),
    ) -> ImageBranch:
        """Train on the images of ``train_ids``; early-stop on those of ``val_ids`` when given.
        ``progress(epochs_done, epochs_planned)`` is called after every epoch; ``callbacks``
        (Keras callbacks, e.g. Optuna's pruning callback) join every training phase."""
        import keras

        self._extra_callbacks = list(callbacks)

        from deeppcos.image import augment, backbones, pipeline

        p = self.params
        keras.utils.set_random_seed(self.seed)
        _deterministic_ops()
        if p.frozen:
            return self._fit_frozen(cohort, train_ids, progress)
        train = pipeline.labelled_table(cohort, train_ids, "training")
        self._check_training_labels(train)
        val = pipeline.labelled_table(cohort, val_ids, "validation") if val_ids else None
        if val is not None and len(val) == 0:
            val = None
        for table in (train, val):
            if table is not None:
                pipeline.check_files(table)

        self.mixed_precision_ = backbones.gpu_available()
        strategy = backbones.training_strategy()
        self.replicas_ = strategy.num_replicas_in_sync if strategy is not None else 1

        def scope() -> Any:  # a context manager serves one ``with``: a fresh one each time
            return strategy.scope() if strategy is not None else contextlib.nullcontext()

        with scope():
            model, embedding = backbones.build_model(
                p.backbone,
                p.image_size,
                p.weights,
                p.dropout,
                self.seed,
                width=p.width,
                mixed_precision=self.mixed_precision_,
                **p.pooling,
            )
        self.model_ = model
        self.embedding_layer_name_ = embedding
        self.backbone_layer_name_ = backbones.backbone_of(model).name
        self.class_weight_ = _class_weights(train.labels) if p.class_weight else None
        self.monitor_ = _monitor(val)
        self.n_train_images_ = len(train)
        self.n_val_images_ = 0 if val is None else len(val)
        self.unfrozen_blocks_: list[str] = []
        self.history_: dict[str, dict[str, list[float]]] = {}
        self._inference = None

        cfg = self.preprocess_config
        space = pipeline.CacheSpace(p.cache_dir)
        try:
            train_ds = pipeline.training_dataset(
                train,
                cfg,
                p.batch_size,
                space=space,
                role="train",
                shuffle=True,
                augment=augment.build_augmentation(p.augment_strength, self.seed)
                if p.augment_strength > 0
                else None,
                seed=self.seed,
            )
            val_ds = (
                None
                if val is None
                else pipeline.training_dataset(
                    val, cfg, p.batch_size, space=space, role="val", shuffle=False
                )
            )
            with scope():  # optimizers are made per phase: in the strategy's scope too
                self._run_phases(train_ds, val_ds, progress)
        except BaseException:
            del self.model_  # a failed or interrupted fit leaves the branch unfitted
            raise
        finally:
            space.close()
        return self

    def _fit_frozen(
        self, cohort: Cohort, train_ids: Sequence[str], progress: Progress | None
    ) -> ImageBranch:
        """Embed the training images (cache first), fit the logistic head, put it in the model."""
        from deeppcos.image import backbones, frozen, pipeline

        p = self.params
        train = pipeline.labelled_table(cohort, train_ids, "training")
        self._check_training_labels(train)
        pipeline.check_files(train)
        self.embedding_key_ = self.embedding_key()
        self.model_, self.embedding_layer_name_ = backbones.build_model(
            p.backbone, p.image_size, p.weights, p.dropout, self.seed, width=p.width, **p.pooling
        )
        self.backbone_layer_name_ = backbones.backbone_of(self.model_).name
        self.class_weight_ = None
        self.monitor_ = None
        self.n_train_images_, self.n_val_images_ = len(train), 0
        self.unfrozen_blocks_, self.history_ = [], {}
        self.mixed_precision_, self.replicas_ = False, 1
        self._inference = None
        x = self._embed(train, progress)
        assert train.labels is not None
        weights, bias = frozen.fit_head(x, train.labels, p.head_c, p.class_weight, self.seed)
        self.model_.get_layer(OUTPUT_LAYER).set_weights(
            [weights.reshape(-1, 1).astype(np.float32), np.array([bias], np.float32)]
        )
        return self

    def embedding_key(self) -> Any:
        """Frozen mode: the cache key of these settings (the weights file is hashed)."""
        from deeppcos.image import backbones, frozen

        p = self.params
        source = backbones.resolve_weights(p.backbone, p.weights, p.width)
        if source is None or not p.frozen:
            raise DeepPCOSError("embedding keys are for frozen mode with pretrained weights")
        from deeppcos._version import __version__

        return frozen.EmbeddingKey(
            backbone=p.backbone,
            width=p.width,
            weights_sha256=backbones.weights_sha256(source),
            preprocess=self.preprocess_config.model_dump_json(),
            tta=p.tta,
            pooling=p.pooling_key,
            deeppcos_version=__version__,
            keras_version=_keras_version(),
        )

    def embedding_cache(self) -> Any:
        """Frozen mode: the on-disk cache these settings read and fill."""
        from deeppcos.image import frozen

        return frozen.EmbeddingCache(
            frozen.cache_root(self.params.embedding_cache),
            self.embedding_key_,
            writable=self.cache_writes,
        )

    def _embed(self, table: ImageTable, progress: Progress | None = None) -> np.ndarray:
        """Frozen mode: the images' embeddings, through the on-disk cache."""
        import keras

        from deeppcos.image import frozen

        p = self.params
        if getattr(self, "_embedder", None) is None:
            layer = self.model_.get_layer(self.embedding_layer_name_)
            self._embedder = keras.Model(self.model_.input, layer.output)
            self._embed_run = frozen.view_mean(self._embedder, p.tta)  # traced once, reused
        return frozen.embed_table(
            table,
            self._embedder,
            self.preprocess_config,
            batch_size=p.batch_size,
            tta=p.tta,
            cache=self.embedding_cache(),
            chunk_size=p.chunk_size,
            progress=progress,
            run=self._embed_run,
        )

    def _check_training_labels(self, train: ImageTable) -> None:
        if len(train) == 0:
            raise SchemaError(
                "none of the training patients has a labelled image; the image branch needs "
                "images whose patient (or the image itself) carries a 0/1 label"
            )
        assert train.labels is not None
        classes = set(np.unique(train.labels).tolist())
        if len(classes) < 2:
            raise SchemaError(
                f"the training images carry one class only ({int(classes.pop())} for all "
                f"{len(train)} images); the image branch needs both 0 and 1"
            )

    def _phases(self) -> list[tuple[str, int, float]]:
        """(phase name, epochs, learning rate), in order; phases of 0 epochs are dropped."""
        p = self.params
        if not p.pretrained:
            epochs = (
                p.max_epochs_compact
                if p.backbone == "compact"
                else p.epochs_head + p.epochs_finetune
            )
            return [("end_to_end", epochs, p.learning_rate)]
        phases = [("head", p.epochs_head, p.learning_rate)]
        if p.unfreeze_fraction > 0:
            phases.append(("finetune", p.epochs_finetune, p.finetune_learning_rate))
        return [phase for phase in phases if phase[1] > 0]

    def _run_phases(self, train_ds: Any, val_ds: Any, progress: Progress | None) -> None:
        import tensorflow as tf

        from deeppcos.image import backbones

        phases = self._phases()
        planned = sum(epochs for _, epochs, _ in phases)
        done = 0
        best: tuple[float, list[Any]] | None = None  # (score, weights) of the best phase so far
        for name, epochs, rate in phases:
            if name == "head":
                backbones.freeze_backbone(self.model_)
            elif name == "finetune":
                self.unfrozen_blocks_ = backbones.unfreeze_top_blocks(
                    self.model_, self.params.backbone, self.params.unfreeze_fraction
                )
            self._compile(rate)
            # A network trained from scratch swings wildly in its first epochs; early stopping
            # only starts watching after ``patience`` of them.
            warm_up = self.params.patience if name == "end_to_end" else 0
            callbacks = self._callbacks(progress, done, planned, warm_up)
            try:
                history = self.model_.fit(
                    train_ds,
                    validation_data=val_ds,
                    epochs=epochs,
                    class_weight=self.class_weight_,
                    callbacks=callbacks,
                    shuffle=False,  # the dataset shuffles itself, with the branch's seed
                    verbose=0,
                )
            except tf.errors.OpError as exc:
                _reraise_image_error(exc)
                raise
            self.history_[name] = {
                key: [float(v) for v in history.history[key]]
                for key in HISTORY_KEYS
                if key in history.history
            }
            done += len(history.history.get("loss", []))
            score = _phase_score(self.history_[name], self.monitor_)
            if score is not None:
                if best is not None and best[0] >= score:
                    self.model_.set_weights(best[1])  # this phase did not improve: undo it
                else:
                    best = (score, self.model_.get_weights())
        if progress and done < planned:  # early stopping ended sooner: close the bar
            progress(planned, planned)

    def _compile(self, rate: float) -> None:
        import keras

        self.model_.compile(
            optimizer=keras.optimizers.Adam(rate),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.AUC(name="auc")],
        )

    def _callbacks(
        self, progress: Progress | None, done: int, planned: int, warm_up: int = 0
    ) -> list[Any]:
        import keras

        callbacks: list[Any] = []
        if self.monitor_ is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=self.monitor_,
                    mode="max" if self.monitor_ == "val_auc" else "min",
                    patience=self.params.patience,
                    restore_best_weights=True,
                    start_from_epoch=warm_up,
                )
            )
        if progress is not None:
            callbacks.append(
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda epoch, logs: progress(done + epoch + 1, planned)
                )
            )
        return [*callbacks, *getattr(self, "_extra_callbacks", [])]

    # --- prediction ------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        require_fitted(self, "model_")

    def _inference_model(self) -> keras.Model:
        """The model with two outputs: P(label = 1) and the embedding (one forward pass)."""
        import keras

        if getattr(self, "_inference", None) is None:
            model = self.model_
            self._inference = keras.Model(
                model.input,
                [model.output, model.get_layer(self.embedding_layer_name_).output],
                name="deeppcos_image_inference",
            )
        return self._inference

    def _forward(self, table: ImageTable) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n,), embeddings (n, d)) for the images of ``table``, in order."""
        import tensorflow as tf

        from deeppcos.image import pipeline

        if self.params.frozen:
            return self._forward_frozen(table)
        model = self._inference_model()
        width = int(model.outputs[1].shape[-1])
        if len(table) == 0:
            return np.zeros(0, np.float32), np.zeros((0, width), np.float32)
        pipeline.check_files(table)
        if len(table) <= pipeline.IN_MEMORY_MAX_IMAGES:
            # One request's images: Keras' predict would build a tf.data pipeline and a
            # progress loop (~25 ms) around a ~2 ms forward pass; the outputs are identical.
            batches = pipeline.inference_batches(table, self.preprocess_config, len(table))
            probability, embedding = model.predict_on_batch(next(iter(batches)))
        else:
            ds = pipeline.inference_dataset(table, self.preprocess_config, self.params.batch_size)
            try:
                probability, embedding = model.predict(ds, verbose=0)
            except tf.errors.OpError as exc:
                _reraise_image_error(exc)
                raise
        return (
            np.asarray(probability, np.float32).reshape(-1),
            np.asarray(embedding, np.float32),
        )

    def _forward_frozen(self, table: ImageTable) -> tuple[np.ndarray, np.ndarray]:
        """Frozen mode: cached embeddings through the model's last layer (the head)."""
        from deeppcos.image import frozen, pipeline

        if len(table):
            pipeline.check_files(table)
        embedding = self._embed(table)
        kernel, bias = self.model_.get_layer(OUTPUT_LAYER).get_weights()
        probability = frozen.head_probability(embedding, kernel[:, 0], float(bias[0]))
        return probability.astype(np.float32), embedding

    def _images(self, cohort: Cohort, patient_ids: Sequence[str] | None) -> ImageTable:
        from deeppcos.image import pipeline

        return pipeline.table_from(pipeline.images_of(cohort, patient_ids))

    def predict_images(
        self, cohort: Cohort, patient_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """One row per image of these patients (all when None): image_id, patient_id,
        probability."""
        self._check_fitted()
        table = self._images(cohort, patient_ids)
        probability, _ = self._forward(table)
        return pd.DataFrame(
            {
                "image_id": table.image_ids,
                "patient_id": table.patient_ids,
                "probability": probability.astype(float),
            }
        )

    def image_embeddings(
        self, cohort: Cohort, patient_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """One row per image: image_id, patient_id, img_emb_0 … (the pooled backbone features)."""
        self._check_fitted()
        table = self._images(cohort, patient_ids)
        _, embedding = self._forward(table)
        frame = pd.DataFrame(embedding.astype(float), columns=_emb_columns(embedding.shape[1]))
        frame.insert(0, "patient_id", table.patient_ids)
        frame.insert(0, "image_id", table.image_ids)
        return frame

    def predict_patients(
        self, cohort: Cohort, patient_ids: Sequence[str] | None = None
    ) -> tuple[pd.Series, pd.DataFrame]:
        """Per patient, from one pass over their images: P(label = 1) (``p_image``) and the
        embedding (``img_emb_*``), each the mean over the patient's images; NaN for a patient
        without images. Indexed by patient_id in the given order (all patients when None)."""
        self._check_fitted()
        ids = _ids(cohort, patient_ids)
        if not has_images(cohort, ids):  # nothing to read (labs only): skip the pipeline
            return self._without_images(ids)
        table = self._images(cohort, ids)
        probability, embedding = self._forward(table)
        per_image = pd.DataFrame(embedding.astype(float), columns=_emb_columns(embedding.shape[1]))
        per_image.insert(0, "p_image", probability.astype(float))
        per_image.insert(0, "patient_id", table.patient_ids)
        mean = per_image.groupby("patient_id", sort=False).mean().reindex(ids)
        mean.index = pd.Index(ids, name="patient_id")
        return mean["p_image"].astype(float), mean.drop(columns="p_image")

    def embedding_width(self) -> int:
        """The length of one image's embedding."""
        if getattr(self, "_embedding_width", None) is None:
            if self.params.frozen:  # the head reads the backbone's pooled features
                layer = self.model_.get_layer(OUTPUT_LAYER)
                self._embedding_width = int(layer.get_weights()[0].shape[0])
            else:
                self._embedding_width = int(self._inference_model().outputs[1].shape[-1])
        return self._embedding_width

    def _without_images(self, ids: list[str]) -> tuple[pd.Series, pd.DataFrame]:
        return without_images(ids, self.embedding_width())

    def predict_proba(self, cohort: Cohort, patient_ids: Sequence[str] | None = None) -> pd.Series:
        """P(label = 1) per patient, indexed by patient_id in the given order (all patients when
        None): the mean over the patient's images; NaN for a patient without images."""
        return self.predict_patients(cohort, patient_ids)[0]

    def transform(self, cohort: Cohort, patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Per-patient image embedding (mean over the patient's images), indexed by patient_id
        in the given order, columns img_emb_0 …; a NaN row for a patient without images."""
        return self.predict_patients(cohort, patient_ids)[1]

    # --- persistence -----------------------------------------------------------------------

    def save(self, folder: Path | str) -> Path:
        """Write ``model.keras`` (Keras' native format, no pickle) and ``image_branch.json``."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model_.save(folder / MODEL_FILE)
        fields = {
            "keras_version": _keras_version(),
            "params": self.params.model_dump(mode="json"),
            "seed": self.seed,
            "embedding_layer_name": self.embedding_layer_name_,
            "backbone_layer_name": self.backbone_layer_name_,
            "unfrozen_blocks": self.unfrozen_blocks_,
            "monitor": self.monitor_,
            "class_weight": (
                None
                if self.class_weight_ is None
                else {str(k): v for k, v in self.class_weight_.items()}
            ),
            "n_train_images": self.n_train_images_,
            "n_val_images": self.n_val_images_,
            "mixed_precision": self.mixed_precision_,
            "replicas": getattr(self, "replicas_", 1),
            "history": self.history_,
            "embedding_width": self.embedding_width(),  # read without loading the model
        }
        if self.params.frozen:
            fields["embedding_key"] = self.embedding_key_.to_dict()
        write_meta(folder / META_FILE, FORMAT, FORMAT_VERSION, fields)
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> ImageBranch:
        """Load what :meth:`save` wrote."""
        _require_keras()
        import keras

        from deeppcos.image import augment, backbones

        _ = (augment, backbones)  # importing them registers the custom layers for deserialising
        folder = Path(folder)
        meta = _read_meta(folder / META_FILE)
        try:
            branch = cls(ImageParams.model_validate(meta["params"]), seed=int(meta["seed"]))
            embedding = str(meta["embedding_layer_name"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataFileError(
                f"{folder / META_FILE}: invalid image branch metadata: {exc}"
            ) from exc
        path = folder / MODEL_FILE
        if not path.is_file():
            raise DataFileError(f"{path}: model file not found")
        try:
            branch.model_ = keras.saving.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a broken archive
            raise DataFileError(f"{path}: not a readable Keras model: {exc}") from exc
        branch.embedding_layer_name_ = embedding
        branch.backbone_layer_name_ = str(meta.get("backbone_layer_name", ""))
        branch.unfrozen_blocks_ = list(meta.get("unfrozen_blocks", []))
        branch.monitor_ = meta.get("monitor")
        weights = meta.get("class_weight")
        branch.class_weight_ = None if weights is None else {int(k): v for k, v in weights.items()}
        branch.n_train_images_ = int(meta.get("n_train_images", 0))
        branch.n_val_images_ = int(meta.get("n_val_images", 0))
        branch.mixed_precision_ = bool(meta.get("mixed_precision", False))
        branch.replicas_ = int(meta.get("replicas", 1))
        branch.history_ = meta.get("history", {})
        branch._inference = None
        # A loaded branch reads the embedding cache but never writes it: predicting or serving
        # new patients leaves nothing of their images on disk.
        branch.cache_writes = False
        if branch.params.frozen:
            from deeppcos.image.frozen import EmbeddingKey

            try:
                branch.embedding_key_ = EmbeddingKey(**meta["embedding_key"])
            except (KeyError, TypeError) as exc:
                raise DataFileError(
                    f"{folder / META_FILE}: a frozen-mode branch without a valid embedding_key"
                ) from exc
        return branch


# --- helpers --------------------------------------------------------------------------------


def _require_keras() -> None:
    """Keras and TensorFlow (the 'image' extra), or a MissingExtraError that says how to get
    them. Not at import: :mod:`deeppcos.image.lazy` uses this module's helpers without them."""
    from deeppcos.extras import require

    require("keras", "image", "the image branch")


def _deterministic_ops() -> None:
    """Same seed, same model: without this, multi-threaded CPU kernels reduce in varying order
    and a rerun's metrics drift in the third decimal."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def _ids(cohort: Cohort, patient_ids: Sequence[str] | None) -> list[str]:
    from deeppcos.image.pipeline import _known_ids

    return _known_ids(cohort, patient_ids)


def _reraise_image_error(exc: Exception) -> None:
    """An unreadable image surfaces from tf.data as a TensorFlow error; raise it as the
    ImageError it was, naming the file, rather than a TensorFlow traceback."""
    from deeppcos.image.pipeline import unwrap_image_error

    error = unwrap_image_error(exc)
    if error is not None:
        raise error from exc


def has_images(cohort: Cohort, ids: Sequence[str]) -> bool:
    """Whether any of these patients has an image in the cohort."""
    return bool(len(cohort.images)) and bool(cohort.images["patient_id"].isin(ids).any())


def without_images(ids: Sequence[str], width: int) -> tuple[pd.Series, pd.DataFrame]:
    """:meth:`ImageBranch.predict_patients`' answer for patients without images: NaN."""
    index = pd.Index(list(ids), name="patient_id")
    embedding = pd.DataFrame(np.nan, index=index, columns=_emb_columns(width))
    return pd.Series(np.nan, index=index, name="p_image"), embedding


def _emb_columns(width: int) -> list[str]:
    return [f"img_emb_{k}" for k in range(width)]


def _class_weights(labels: np.ndarray | None) -> dict[int, float]:
    """n / (2·n_c): each class weighs half of the loss, whatever the prevalence."""
    assert labels is not None
    n = len(labels)
    positives = float(labels.sum())
    return {0: n / (2.0 * (n - positives)), 1: n / (2.0 * positives)}


def _monitor(val: ImageTable | None) -> str | None:
    if val is None:
        return None
    assert val.labels is not None
    # ROC AUC needs both classes; otherwise early stopping watches the loss.
    return "val_auc" if len(np.unique(val.labels)) == 2 else "val_loss"


def _phase_score(history: dict[str, list[float]], monitor: str | None) -> float | None:
    """The phase's best monitored value, as "higher is better"."""
    if monitor is None or not history.get(monitor):
        return None
    values = history[monitor]
    return max(values) if monitor == "val_auc" else -min(values)


def _keras_version() -> str:
    import keras

    return str(keras.__version__)


def _read_meta(path: Path) -> dict[str, Any]:
    return read_meta(path, FORMAT, FORMAT_VERSION, "image branch")
