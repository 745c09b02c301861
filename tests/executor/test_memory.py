"""Memory estimates from sizes alone: the 4096x4096 runs are refused before any allocation."""

from __future__ import annotations

import pytest

from chipq.executor.memory import InputTooSmall, NotEnoughMemory, activation_bytes, check_fits, check_input_size
from chipq.formats.synthetic import VGG16_CONFIG, VGG16_PLAN_3X7_1X6, random_model


@pytest.fixture(scope="module")
def vgg16():
    return random_model(VGG16_PLAN_3X7_1X6, VGG16_CONFIG, seed=0)


def test_the_estimate_grows_with_the_pixels_and_the_batch(vgg16):
    base = activation_bytes(vgg16.layers, (224, 224), 1)
    # conv1_2 is the widest: (64 + 64) maps of 224x224, 4 bytes, two copies
    assert base == (64 + 64) * 224 * 224 * 4 * 2
    assert activation_bytes(vgg16.layers, (448, 448), 1) == 4 * base
    assert activation_bytes(vgg16.layers, (224, 224), 8) == 8 * base


def test_4096_square_vgg16_is_refused_and_224_fits(vgg16, monkeypatch):
    monkeypatch.setattr("chipq.executor.memory.available_bytes", lambda: 8 << 30)  # an 8 GiB machine
    check_fits(vgg16.layers, (224, 224), 8, "blob")
    with pytest.raises(NotEnoughMemory, match=r"--input 4096x4096: a 4096x4096 input needs about 16\.0 GiB"):
        check_fits(vgg16.layers, (4096, 4096), 1, "--input 4096x4096")


def test_sizes_too_small_for_the_pools_are_refused(vgg16):
    check_input_size(vgg16.layers, (16, 16), "--input 16x16")  # four pools: 16 -> 1
    with pytest.raises(InputTooSmall, match="4 max-pools need at least 16x16"):
        check_input_size(vgg16.layers, (8, 8), "--input 8x8")


# --- compress: every stage known before the work (issue 25) ------------------------------------------


def test_compress_stages_of_vgg16_fit_2_gb_and_grow_with_their_settings(vgg16):
    from chipq.executor.memory import RUNTIME_BYTES, calibration_bytes, reconstruction_bytes, training_bytes

    recon = reconstruction_bytes(vgg16.layers, (224, 224), 16384)
    assert RUNTIME_BYTES + recon < 2 << 30  # the streamed reconstruction: no map of every image in memory
    assert reconstruction_bytes(vgg16.layers, (224, 224), 8192) < recon
    assert calibration_bytes(vgg16.layers, (448, 448)) > 3 * calibration_bytes(vgg16.layers, (224, 224))
    cache = training_bytes(vgg16.layers, 224, 256, 8, 7)
    # each sample: conv4_1's uint8 input (256 x 28 x 28) and the teacher's last map (512 x 14 x 14 float32)
    per_sample = 256 * 28 * 28 + 512 * 14 * 14 * 4 + 3 * 224 * 224
    assert training_bytes(vgg16.layers, 224, 1256, 8, 7) - cache == 1000 * per_sample


def test_the_estimates_use_the_reconstructions_own_chunk_sizes():
    from chipq.executor import memory
    from chipq.quant import reconstruct

    assert (memory.RECONSTRUCT_CHUNK, memory.GRAM_OUTPUTS, memory.REFIT_OUTPUTS) == (
        reconstruct.CHUNK, reconstruct.GRAM_CHUNK, reconstruct.REFIT_CHUNK,
    )


def test_the_largest_stage_is_refused_in_one_line_naming_its_option(monkeypatch):
    from chipq.executor.memory import check_stages

    monkeypatch.setattr("chipq.executor.memory.available_bytes", lambda: 8 << 30)
    stages = [("the reconstruction", 1 << 30, "--input 224x224", "use a smaller input size"),
              ("retraining's cache", 100 << 40, "--samples 100000000", "lower --samples")]  # fmt: skip
    with pytest.raises(NotEnoughMemory) as caught:
        check_stages(stages)
    text = str(caught.value)
    assert text.startswith("--samples 100000000: retraining's cache needs about 100.") and "TiB" in text
    assert text.endswith("8.0 GiB is available; lower --samples") and "\n" not in text
    assert check_stages(stages[:1]) > 1 << 30


def test_compress_with_a_huge_sample_cache_is_refused_before_any_work(tmp_path, monkeypatch):
    """Issue 24 point 8: refused up front (it reconstructed for 111 s, then ran out of memory)."""
    from helpers import save_tiny_vgg, write_photos

    from chipq.pipeline import compress as pipeline
    from chipq.retrain.config import RetrainConfig

    model, photos = save_tiny_vgg(tmp_path / "m.pt"), tmp_path / "photos"
    write_photos(photos)
    monkeypatch.setattr("chipq.executor.memory.available_bytes", lambda: 8 << 30)
    started = []
    monkeypatch.setattr("chipq.pipeline.compress.calibration_batch", lambda *a, **k: started.append(1))
    with pytest.raises(NotEnoughMemory, match=r"^--samples 100000000 at --input 224x224: retraining's cache .* lower --samples"):
        pipeline.compress(model, "3x7,1x6", images=photos, retrain=RetrainConfig(samples=100_000_000), output=tmp_path / "o.blob")
    assert not started and not (tmp_path / "o.blob").exists()


def test_plan_that_cannot_fit_is_refused_before_any_work(tmp_path, monkeypatch):
    """Issue 25: `chipq plan` counts its stages too (the sensitivity's candidates and tail passes)."""
    from helpers import save_tiny_vgg, write_photos

    from chipq.pipeline import plan as pipeline

    model, photos = save_tiny_vgg(tmp_path / "m.pt"), tmp_path / "photos"
    write_photos(photos)
    monkeypatch.setattr("chipq.executor.memory.available_bytes", lambda: 64 << 20)
    started = []
    monkeypatch.setattr("chipq.quant.calibrate.calibration_images", lambda *a, **k: started.append(1))
    with pytest.raises(NotEnoughMemory, match=r"^--input 224x224: .* needs about .* GiB of memory, 0\.1 GiB is available; "):
        pipeline.plan(model, "15x", images=photos, input_hw=(224, 224))
    assert not started


def test_plan_estimate_counts_every_setting_it_keeps():
    import numpy as np

    from chipq.executor import memory
    from chipq.floatnet.model import FloatConv

    layers = [FloatConv("a", np.zeros((8, 3, 3, 3), np.float32), np.zeros(8, np.float32))]
    one, thirteen = (memory.sensitivity_bytes(layers, (16, 16), 64, n, 8) for n in (1, 13))
    assert thirteen - one == 12 * 8 * 3 * memory.STORED_KERNEL_BYTES


def test_compress_budget_counts_the_planners_sensitivity_before_any_work(tmp_path, monkeypatch):
    """`compress --budget` runs the planner: its sensitivity is a stage of the up-front check."""
    from helpers import save_tiny_vgg, write_photos

    from chipq.pipeline import compress as pipeline
    from chipq.pipeline import plan

    model, photos = save_tiny_vgg(tmp_path / "m.pt"), tmp_path / "photos"
    write_photos(photos)
    monkeypatch.setattr("chipq.executor.memory.available_bytes", lambda: 8 << 30)
    stage = plan.sensitivity_stage
    monkeypatch.setattr(plan, "sensitivity_stage", lambda *a: (stage(*a)[0], 1 << 40, *stage(*a)[2:]))  # a huge one
    started = []
    monkeypatch.setattr("chipq.pipeline.compress.calibration_batch", lambda *a, **k: started.append(1))
    with pytest.raises(NotEnoughMemory, match=r"^--input 224x224: the layer sensitivity needs about 1\.0 TiB .* --plan PLAN"):
        pipeline.compress(model, budget="15x", images=photos, output=tmp_path / "o.blob")
    assert not started


@pytest.mark.parametrize("late", [True, False])
def test_compress_budget_checks_retraining_for_the_plan_it_chose(tmp_path, monkeypatch, late):
    """The retraining's need depends on the chosen plan's first trained layer: it is checked once the
    plan is known, before the work (a plan that trains from conv1 was assumed, refusing runs that fit)."""
    import numpy as np
    from helpers import save_tiny_vgg, write_photos

    from chipq.executor import memory
    from chipq.importers import load_model
    from chipq.pipeline import compress as pipeline
    from chipq.quant.plan import LayerSpec
    from chipq.retrain.config import RetrainConfig

    model, photos = save_tiny_vgg(tmp_path / "m.pt"), tmp_path / "photos"
    write_photos(photos)
    config = RetrainConfig(samples=20_000)
    layers = load_model(model).without_trailing_pool().layers
    # between what training from the last conv and from conv1 needs (each beside the same fixed part)
    from_last, from_first = (memory.training_bytes(layers, config.crop, config.samples, config.batch, i) for i in (12, 0))
    assert from_first > from_last + (1 << 30)
    monkeypatch.setattr("chipq.executor.memory.available_bytes", lambda: memory.RUNTIME_BYTES + 64 * 2**20 + (from_last + from_first) // 2)
    specs = [LayerSpec(5)] * 12 + [LayerSpec(1)] if late else [LayerSpec(1)] * 13
    chosen = type("Chosen", (), {"specs": specs, "plan": "x"})()
    monkeypatch.setattr("chipq.pipeline.plan.make_plan", lambda *a, **k: chosen)
    monkeypatch.setattr("chipq.pipeline.compress.calibration_batch", lambda *a, **k: np.zeros((2, 3, 224, 224), np.uint8))
    trained = []
    monkeypatch.setattr("chipq.pipeline.compress._retrained", lambda *a, **k: trained.append(a[1]) or 1 / 0)
    monkeypatch.setattr("chipq.retrain.trainer.load_training_images", lambda *a, **k: [])
    if late:
        with pytest.raises(ZeroDivisionError):  # went on to retrain
            pipeline.compress(model, budget="15x", images=photos, retrain=config)
        assert trained == [specs]
    else:
        with pytest.raises(NotEnoughMemory, match=r"^--samples 20000 at --input 224x224: retraining's cache"):
            pipeline.compress(model, budget="15x", images=photos, retrain=config)
        assert not trained


@pytest.mark.parametrize(("env", "expected"), [("8589934592", (1 << 31) - 1), (None, 128 << 10), ("junk", 128 << 10), ("65536", 65536)])
def test_the_started_mmap_threshold_fits_mallopts_int(monkeypatch, env, expected):
    from chipq.executor.memory import started_mmap_threshold

    if env is None:
        monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    else:
        monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", env)
    assert started_mmap_threshold() == expected


LEAVE_MAPPED = """
import resource
import numpy as np
from chipq.executor.memory import large_blocks_mapped, release_freed_memory
with large_blocks_mapped():
    pass
release_freed_memory()  # as the reconstruction does after each layer: the heap's top given back
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2000):
    block = np.ones(50_000)  # 400 kB, freed each time round
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
"""


def test_after_large_blocks_mapped_freed_blocks_are_reused_under_the_heavy_commands_settings():
    """With the heavy commands' ``MALLOC_MMAP_THRESHOLD_`` of 8 GiB, leaving the block must not set
    the threshold to 0 (the low 32 bits of 8 GiB). A threshold of 0 would map every block afresh
    and fault in its pages each time: 2000 blocks of 400 kB would take 200,000 page faults."""
    import os
    import subprocess
    import sys

    from chipq.cli import MALLOC_SETTINGS

    done = subprocess.run([sys.executable, "-c", LEAVE_MAPPED], env={**os.environ, **MALLOC_SETTINGS}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 20_000, done.stdout
