"""Transfer learning for real: MobileNet v1 (width 0.25) with the real ImageNet file from
``../shared/weights``, copied into a temporary Keras cache (never into the repository): the
weights really load, local files that do not fit are refused clearly, two-phase fine-tuning and
Grad-CAM run, a saved model predicts without the file, and the frozen-embedding mode caches
every image once."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from deeppcos.data import Cohort
from deeppcos.exceptions import ConfigError
from deeppcos.image import ImageBranch, ImageParams, backbones, frozen
from deeppcos.image.backbones import backbone_blocks, backbone_of, build_model
from deeppcos.image.gradcam import grad_cam
from deeppcos.image.specs import SPECS, imagenet_weights

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
SHA256 = "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"


@pytest.fixture
def keras_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A Keras cache holding the real ImageNet file (a copy), with downloads impossible."""
    if not WEIGHTS.is_file():
        pytest.skip(f"ImageNet weights not found at {WEIGHTS}")
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    shutil.copyfile(WEIGHTS, cache / WEIGHTS.name)
    monkeypatch.setattr(backbones, "keras_cache_dir", lambda: cache)

    def no_network(*args: object, **kwargs: object) -> Path:
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(backbones, "_download", no_network)
    return cache


def _mobilenet(**overrides: Any) -> ImageParams:
    settings = {
        "backbone": "mobilenet",
        "width": 0.25,
        "weights": "imagenet",
        "image_size": 64,
        "batch_size": 16,
        **overrides,
    }
    return ImageParams(**settings)


def test_the_imagenet_file_name_is_the_one_keras_caches() -> None:
    spec = SPECS["mobilenet"]
    assert imagenet_weights(spec, 0.25).file_name == WEIGHTS.name  # type: ignore[union-attr]
    assert imagenet_weights(spec, 1.0).url.endswith("/mobilenet/mobilenet_1_0_224_tf_no_top.h5")  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="widths"):
        imagenet_weights(spec, 0.3)


def test_imagenet_weights_are_really_loaded(keras_cache: Path) -> None:
    """Every weight of the backbone equals the file's, at an input size the file was not
    trained at (96 px): convolution weights do not depend on it."""
    model, _ = build_model("mobilenet", 96, "imagenet", width=0.25)
    base = backbone_of(model)
    checked = 0
    with h5py.File(keras_cache / WEIGHTS.name, "r") as handle:
        for name in handle.attrs["layer_names"]:
            layer_name = name.decode() if isinstance(name, bytes) else name
            group = handle[layer_name]
            stored = [group[w.decode()][()] for w in group.attrs["weight_names"]]
            if not stored:  # the input and activation layers hold no weights
                continue
            for mine, theirs in zip(base.get_layer(layer_name).get_weights(), stored, strict=True):
                np.testing.assert_array_equal(mine, theirs)
                checked += 1
    assert checked > 100
    assert backbones.weights_sha256(keras_cache / WEIGHTS.name) == SHA256
    blocks = [name for name, _ in backbone_blocks(base, "mobilenet")]
    assert blocks == ["conv1", *[str(k) for k in range(1, 14)]]
    # Random initialisation is something else entirely.
    random, _ = build_model("mobilenet", 96, None, width=0.25)
    assert not np.allclose(
        backbone_of(random).get_layer("conv1").get_weights()[0],
        base.get_layer("conv1").get_weights()[0],
    )


def test_without_the_file_and_offline_the_error_says_what_to_do(
    keras_cache: Path,
) -> None:
    (keras_cache / WEIGHTS.name).unlink()
    with pytest.raises(ConfigError) as caught:
        build_model("mobilenet", 64, "imagenet", width=0.25)
    message = str(caught.value)
    assert WEIGHTS.name in message and str(keras_cache) in message and "weights: null" in message


def test_a_local_weights_file_and_the_files_that_do_not_fit(tmp_path: Path) -> None:
    if not WEIGHTS.is_file():
        pytest.skip(f"ImageNet weights not found at {WEIGHTS}")
    local = tmp_path / "mine.h5"
    shutil.copyfile(WEIGHTS, local)
    model, _ = build_model("mobilenet", 64, str(local), width=0.25)
    with h5py.File(local, "r") as handle:
        kernel = handle["conv1"]["conv1"]["kernel:0"][()]
    np.testing.assert_array_equal(backbone_of(model).get_layer("conv1").get_weights()[0], kernel)
    with pytest.raises(ConfigError, match=r"\(3, 3, 3, 8\), the backbone's \(3, 3, 3, 16\)"):
        build_model("mobilenet", 64, str(local), width=0.5)  # the 0.25 file at width 0.5
    renamed = tmp_path / "mine.weights.h5"
    shutil.copyfile(WEIGHTS, renamed)
    with pytest.raises(ConfigError, match=r"Keras 2 weights .* rename it to end in '.h5'"):
        build_model("mobilenet", 64, str(renamed), width=0.25)
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    with pytest.raises(ConfigError, match="not an HDF5 weights file"):
        build_model("mobilenet", 64, str(text), width=0.25)
    with pytest.raises(ConfigError, match="could not load"):
        build_model("efficientnetb0", 64, str(local))  # another backbone's file


def test_parameters_of_the_modes_are_checked() -> None:
    assert _mobilenet().mode == "finetune" and ImageParams().mode == "scratch"
    with pytest.raises(ValueError, match="needs pretrained weights"):
        ImageParams(backbone="mobilenet", mode="frozen")
    with pytest.raises(ValueError, match="random weights"):
        ImageParams(backbone="mobilenet", weights="imagenet", mode="scratch")
    with pytest.raises(ValueError, match="no width multiplier"):
        ImageParams(backbone="efficientnetb0", width=0.5)
    with pytest.raises(ValueError, match="applies to mode 'frozen' only"):
        _mobilenet(tta=2)


def test_two_phase_finetuning_grad_cam_and_reloading_without_the_file(
    keras_cache: Path, cohort: Cohort, split: Any, tmp_path: Path
) -> None:
    train, val, held_out = split
    params = _mobilenet(epochs_head=1, epochs_finetune=1, unfreeze_fraction=0.2)
    branch = ImageBranch(params, seed=0).fit(cohort, train, val)
    assert set(branch.history_) == {"head", "finetune"}
    assert branch.unfrozen_blocks_ == ["11", "12", "13"]
    first = branch.predict_proba(cohort, held_out)
    image = _pixels(branch, branch._images(cohort, held_out[:1]))[0]
    maps = [grad_cam(branch, image, target=t) for t in ("positive", "negative")]
    for heat in maps:
        assert heat.shape == (64, 64) and heat.min() >= 0.0 and heat.max() <= 1.0
    assert max(heat.max() for heat in maps) > 0  # evidence one way or the other
    branch.save(tmp_path / "image")
    (keras_cache / WEIGHTS.name).unlink()  # a machine without the weights file (and offline)
    loaded = ImageBranch.load(tmp_path / "image")
    np.testing.assert_allclose(loaded.predict_proba(cohort, held_out), first, atol=1e-6)


def test_frozen_mode_embeds_each_image_once(
    keras_cache: Path, cohort: Cohort, split: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, _, held_out = split
    params = _mobilenet(mode="frozen", embedding_cache=str(tmp_path / "cache"), chunk_size=7)
    calls: list[int] = []
    real = frozen.embed_chunk

    def counting(table: Any, *args: Any) -> np.ndarray:
        calls.append(len(table))
        return real(table, *args)

    monkeypatch.setattr(frozen, "embed_chunk", counting)
    seen: list[tuple[int, int]] = []
    branch = ImageBranch(params, seed=0).fit(
        cohort, train, None, progress=lambda d, t: seen.append((d, t))
    )
    n_train = branch.n_train_images_
    assert sum(calls) == n_train and max(calls) <= 7 and seen[-1] == (n_train, n_train)
    cache = frozen.EmbeddingCache(tmp_path / "cache", branch.embedding_key_)
    assert len(cache) == n_train
    # The head is a logistic regression on the embeddings, inside the Keras model itself.
    table = branch._images(cohort, held_out)
    p_cached, _ = branch._forward(table)
    p_model = np.asarray(branch.model_.predict(_pixels(branch, table), verbose=0)).reshape(-1)
    np.testing.assert_allclose(p_cached, p_model, atol=1e-5)
    # A second training over the same images computes nothing.
    calls.clear()
    again = ImageBranch(params, seed=0).fit(cohort, train, None)
    assert calls == []
    np.testing.assert_array_equal(
        again.predict_proba(cohort, train), branch.predict_proba(cohort, train)
    )
    # Other preprocessing is another key: nothing is mixed up.
    other = frozen.EmbeddingCache(
        tmp_path / "cache",
        ImageBranch(_mobilenet(mode="frozen", image_size=96), seed=0)
        .fit(cohort, train[:6], None)
        .embedding_key_,
    )
    assert other.folder != cache.folder
    # Saved and loaded, it predicts the same, through the same cache, which it only reads:
    # scoring new patients leaves nothing of their images on disk.
    loaded = ImageBranch.load(branch.save(tmp_path / "saved"))
    np.testing.assert_array_equal(
        loaded.predict_proba(cohort, held_out), branch.predict_proba(cohort, held_out)
    )
    assert not loaded.embedding_cache().writable
    loaded.params = loaded.params.model_copy(update={"embedding_cache": str(tmp_path / "new")})
    loaded.predict_proba(cohort, held_out)
    assert not (tmp_path / "new").exists()
    # A cache folder that cannot be written costs the caching, not the prediction.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    branch.params = branch.params.model_copy(update={"embedding_cache": str(blocked)})
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        p_blocked = branch.predict_proba(cohort, held_out)
    np.testing.assert_array_equal(p_blocked, loaded.predict_proba(cohort, held_out))


def _pixels(branch: ImageBranch, table: Any) -> np.ndarray:
    from deeppcos.image.pipeline import inference_dataset

    batches = inference_dataset(table, branch.preprocess_config, 64)
    return np.concatenate([np.asarray(b) for b in batches])


def test_test_time_augmentation_averages_views(
    keras_cache: Path, cohort: Cohort, split: Any, tmp_path: Path
) -> None:
    train = split[0][:8]
    plain = ImageBranch(_mobilenet(mode="frozen"), seed=0)
    plain.fit(cohort, train, None)
    flipped = ImageBranch(_mobilenet(mode="frozen", tta=2), seed=0).fit(cohort, train, None)
    table = plain._images(cohort, train)
    one = plain._embed(table)
    two = flipped._embed(table)
    assert flipped.embedding_key_ != plain.embedding_key_
    assert one.shape == two.shape and not np.allclose(one, two)


def test_distributed_extraction_equals_the_single_process_one(
    keras_cache: Path, cohort: Cohort, tmp_path: Path
) -> None:
    """Two Dask worker processes, one task per chunk, each building the backbone once."""
    from distributed import Client, LocalCluster

    from deeppcos.image.pipeline import images_of, table_from

    params = _mobilenet(mode="frozen")
    table = table_from(images_of(cohort, None))
    single = ImageBranch(params, seed=0)
    single.model_, single.embedding_layer_name_ = build_model(
        "mobilenet", 64, "imagenet", width=0.25
    )
    key = frozen.EmbeddingKey(
        "mobilenet", 0.25, SHA256, single.preprocess_config.model_dump_json(), 1
    )
    single.embedding_key_ = key
    single.params = params.model_copy(update={"embedding_cache": str(tmp_path / "one")})
    expected = single._embed(table)
    cache = frozen.EmbeddingCache(tmp_path / "many", key)
    model = {
        "backbone": "mobilenet",
        "width": 0.25,
        "weights": str(keras_cache / WEIGHTS.name),
        "image_size": 64,
        "tta": 1,
    }
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        done = frozen.embed_distributed(
            table,
            model,
            single.preprocess_config,
            cache,
            batch_size=16,
            chunk_size=10,
            client=client,
        )
    assert done == len(table)
    got = np.stack(cache.load(frozen.image_keys(table)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_fine_tuning_mirrors_over_two_devices(tmp_path: Path) -> None:
    """MirroredStrategy when more than one accelerator is visible, tried on two logical CPUs
    in a fresh process (devices must be configured before TensorFlow starts)."""
    if not WEIGHTS.is_file():
        pytest.skip(f"ImageNet weights not found at {WEIGHTS}")
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        from pathlib import Path
        from deeppcos.data.synthetic import generate_cohort
        from deeppcos.data import load_cohort
        from deeppcos.image import ImageBranch, ImageParams, backbones
        backbones.accelerators = lambda: [d.name for d in tf.config.list_logical_devices("CPU")]
        folder = Path({str(tmp_path)!r})
        cohort = load_cohort(generate_cohort(folder / "c", n_patients=24, seed=0, image_size=48))
        ids = sorted(cohort.patients["patient_id"])
        params = ImageParams(backbone="mobilenet", width=0.25, weights={str(WEIGHTS)!r},
                             image_size=32, epochs_head=1, epochs_finetune=1, batch_size=8)
        branch = ImageBranch(params, seed=0).fit(cohort, ids[:16], ids[16:20])
        p = branch.predict_proba(cohort, ids[20:])
        print("REPLICAS", branch.replicas_, "FINITE", bool(p.dropna().between(0, 1).all()))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REPLICAS 2 FINITE True" in result.stdout


def test_embed_command_fills_the_cache_once(
    keras_cache: Path, cohort_dir: Path, tmp_path: Path
) -> None:
    import yaml
    from typer.testing import CliRunner

    from deeppcos.cli import app

    config = {
        "name": "embed-tiny",
        "cohort_spec": str(cohort_dir / "cohort.yaml"),
        "tabular": {"enabled": False},
        "image": {
            "params": {
                **{k: v for k, v in _mobilenet(mode="frozen").model_dump().items() if k in
                   ("backbone", "width", "weights", "mode", "image_size")},
                "embedding_cache": str(tmp_path / "cache"),
            }
        },
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    first = runner.invoke(app, ["embed", "--config", str(path), "--chunk-size", "5"])
    assert first.exit_code == 0, first.output
    n = int(first.output.split(" images:")[0].split()[-1])
    assert f"{n} images: 0 already cached, {n} embedded" in first.output
    again = runner.invoke(app, ["embed", "--config", str(path)])
    assert f"{n} images: {n} already cached, 0 embedded" in again.output
    config["image"]["params"] = {"backbone": "compact"}
    path.write_text(yaml.safe_dump(config))
    wrong = runner.invoke(app, ["embed", "--config", str(path)])
    assert wrong.exit_code == 1 and "mode: frozen" in wrong.output


def test_spatial_grid_pooling_averages_each_cell_of_each_map() -> None:
    from deeppcos.image.backbones import SpatialGridPooling, grid_edges

    rng = np.random.default_rng(0)
    fine, coarse = rng.normal(size=(2, 5, 5, 3)), rng.normal(size=(2, 3, 3, 4))
    out = np.asarray(SpatialGridPooling(2)([fine.astype("float32"), coarse.astype("float32")]))
    assert grid_edges(5, 2) == [0, 2, 5] and grid_edges(3, 2) == [0, 2, 3]
    expected = []
    for maps in (fine, coarse):
        edges = grid_edges(maps.shape[1], 2)
        for top, bottom in itertools.pairwise(edges):
            for left, right in itertools.pairwise(edges):
                expected.append(maps[:, top:bottom, left:right, :].mean(axis=(1, 2)))
    np.testing.assert_allclose(out, np.concatenate(expected, axis=1), atol=1e-6)
    assert out.shape == (2, 4 * 3 + 4 * 4)
    with pytest.raises(ConfigError, match="pool_grid 4 needs feature maps at least 4"):
        grid_edges(3, 4)


def test_grid_pooled_embeddings_grad_cam_and_reloading(
    keras_cache: Path, cohort: Cohort, split: Any, tmp_path: Path
) -> None:
    """A grid-pooled frozen branch: the embedding keeps each cell of both maps, the Keras model
    still gives the head's probability, Grad-CAM explains the last map, and it reloads."""
    train, _, held_out = split
    params = _mobilenet(
        mode="frozen",
        image_size=96,
        pool_grid=2,
        pool_layers=["conv_pw_11_relu"],
        embedding_cache=str(tmp_path / "cache"),
    )
    branch = ImageBranch(params, seed=0).fit(cohort, train, None)
    # MobileNet 0.25: conv_pw_11 has 128 channels, the last map 256; 2 x 2 cells of each.
    assert branch.embedding_width() == 4 * (128 + 256)
    plain = ImageBranch(_mobilenet(mode="frozen", image_size=96), seed=0)
    plain.fit(cohort, train[:6], None)
    assert plain.embedding_key_.digest() != branch.embedding_key_.digest()
    table = branch._images(cohort, held_out)
    p_cached, _ = branch._forward(table)
    pixels = _pixels(branch, table)
    p_model = np.asarray(branch.model_.predict(pixels, verbose=0)).reshape(-1)
    np.testing.assert_allclose(p_cached, p_model, atol=1e-5)
    heat = grad_cam(branch, pixels[0])
    assert heat.shape == (96, 96) and heat.max() > 0
    loaded = ImageBranch.load(branch.save(tmp_path / "saved"))
    np.testing.assert_allclose(
        loaded.predict_proba(cohort, held_out), branch.predict_proba(cohort, held_out), atol=1e-6
    )
    with pytest.raises(ConfigError, match=r"no layer 'conv_pw_99_relu'.*conv_pw_13_relu"):
        build_model("mobilenet", 96, "imagenet", width=0.25, pool_layers=["conv_pw_99_relu"])


def test_keys_made_before_pooling_was_an_option_keep_their_digest() -> None:
    import hashlib
    import json
    from dataclasses import asdict

    key = frozen.EmbeddingKey("mobilenet", 0.25, "abc", "{}", 1, "", "0.1", "3.15")
    old = {k: v for k, v in asdict(key).items() if k != "pooling"}  # the field set before
    assert key.digest() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:24]
    assert frozen.EmbeddingKey("mobilenet", 0.25, "abc", "{}", 1, '{"grid": 4}').digest() != (
        key.digest()
    )
