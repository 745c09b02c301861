"""Per-layer sensitivity: the quantized layer is the chip's, the numbers make sense, the cache hits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from floatcraft import random_stack

from chipq.executor import golden
from chipq.quant import sensitivity
from chipq.quant.compress import calibrate, compress
from chipq.quant.plan import LayerSpec
from chipq.quant.sensitivity import Sensitivity, SensitivityError, measure


def _pool(maps):
    """A simple descriptor: per channel RMS over the map, max over the views, L2-normalised."""
    vector = np.sqrt(np.mean(np.square(maps), axis=(2, 3))).max(axis=0)
    return vector / max(np.linalg.norm(vector), 1e-30)


@pytest.fixture(scope="module")
def setup():
    stack = random_stack([6, "M", 8, 8, "M", 6], seed=2)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:24]
    images = []
    for i in range(3):
        base = np.stack([np.sin(xx / (2 + i + c)) * np.cos(yy / (3 + c)) for c in range(3)])
        images.append(np.clip(128 + 90 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    calib = np.stack(images)
    return stack, calib, calibrate(stack, calib)


def _views(calib):
    return np.stack([np.stack([img, np.rot90(img, 2, axes=(1, 2))]) for img in calib]).copy()


def test_the_quantized_layer_is_the_chip_layer(setup):
    """A one-conv model: the sensitivity run at m bits is the golden executor's output, in real units."""
    stack = random_stack([6], seed=4)
    _, calib, _ = setup
    fracs = calibrate(stack, calib)
    chain = sensitivity._Layers(stack, fracs)
    for bits in sensitivity.WIDTHS:
        layer = chain.chip(0, chain.quantized(0, bits))
        got = chain.net.run(chain.net.input(calib), swap={0: layer}).numpy()
        model = compress(stack, [bits], calib, (24, 24), reconstruction=None).model  # weight-only, as measured
        want = golden.GoldenExecutor(model).run(calib).astype(np.float64) * 2.0 ** -model.activation_fracs()[-1]
        # float32 convolution: a value on a rounding boundary may land one step away, rarely
        step = 2.0**-layer.frac
        assert np.max(np.abs(got - want)) <= step + 1e-9
        assert np.mean(np.abs(got - want) > 1e-9) < 0.01


@pytest.mark.parametrize("probe", [sensitivity.EXACT, sensitivity.NOISE_GAIN], ids=["exact", "noise-gain"])
def test_measure_shapes_sense_and_additive_prediction(setup, tmp_path, probe):
    stack, calib, fracs = setup
    result = measure(stack, _views(calib), fracs, _pool, "rms", cache_dir=tmp_path, probe=probe)
    assert result.method == probe.name()
    assert result.layers == ["conv1_1", "conv2_1", "conv2_2", "conv3_1"]
    assert (result.images, result.views) == (3, 2)
    assert 0.9 < result.ref_cosine <= 1.0 + 1e-9
    for layer in range(4):
        assert len(result.cosine[layer]) == 5
        # 5-bit masks are closer to float than 1-bit masks, on both measures
        assert result.cosine[layer][4] > result.cosine[layer][0]
        assert result.sqnr_db[layer][4] > result.sqnr_db[layer][0]
        assert result.dist2[layer][4] < result.dist2[layer][0]
    plan = [1, 5, 3, 2]
    predicted = result.predict(plan)
    assert predicted["cosine"] == pytest.approx(result.ref_cosine - sum(result.loss(i, m) for i, m in enumerate(plan)))
    noise = result.ref_noise + sum(result.noise[i][m - 1] for i, m in enumerate(plan))
    assert predicted["sqnr_db"] == pytest.approx(-10 * np.log10(noise))
    with pytest.raises(SensitivityError):
        result.predict([1, 2])


def test_cache_hit_miss_and_damage(setup, tmp_path):
    stack, calib, fracs = setup
    views = _views(calib)
    first = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path)
    assert not first.cached
    files = list((tmp_path / "sensitivity").glob("*.json"))
    assert [f.stem for f in files] == [first.key]
    second = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path)
    assert second.cached and second.cosine == first.cosine and second.dist2 == first.dist2
    # other images, other fractions, another descriptor or other weights: other keys, measured anew
    assert not measure(stack, views[:2], fracs, _pool, "rms", cache_dir=tmp_path).cached
    assert not measure(stack, views, [f + 1 for f in fracs], _pool, "rms", cache_dir=tmp_path).cached
    assert not measure(stack, views, fracs, _pool, "rms-v2", cache_dir=tmp_path).cached
    other = random_stack([6, "M", 8, 8, "M", 6], seed=9)
    assert not measure(other, views, fracs, _pool, "rms", cache_dir=tmp_path).cached
    # a damaged entry is measured again and rewritten
    files[0].write_text("{not json")
    again = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path)
    assert not again.cached and again.cosine == first.cosine
    assert json.loads(files[0].read_text())["key"] == first.key
    # use_cache=False neither reads nor writes
    assert not measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, use_cache=False).cached


def test_bad_inputs_are_refused(setup, tmp_path):
    stack, calib, fracs = setup
    with pytest.raises(SensitivityError, match="uint8"):
        measure(stack, calib, fracs, _pool, "rms", cache_dir=tmp_path)
    with pytest.raises(SensitivityError, match="fraction bits"):
        measure(stack, _views(calib), fracs[:2], _pool, "rms", cache_dir=tmp_path)


def test_reconstructed_layer_weights(setup, tmp_path):
    """Sensitivity of the layers as post-training compress makes them (`each_layer_candidates`): its own
    cache key, the candidates computed only on a miss, each one exactly α·M, and on the images they
    were fitted to closer to float than the weight-only quantization."""
    from chipq.quant.quantize import dequantized_weights, quantize_conv
    from chipq.quant.reconstruct import ReconstructConfig, each_layer_candidates

    stack, calib, fracs = setup
    config = ReconstructConfig(positions=512, threads=1, error_feedback=False)
    calls = []

    def candidates():
        calls.append(1)
        return list(each_layer_candidates(stack, fracs, calib, sensitivity.WIDTHS, config))

    views = _views(calib)
    rebuilt = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, layer_weights=candidates, weights_name="rec")
    plain = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path)
    assert rebuilt.key != plain.key and (rebuilt.weights, plain.weights) == ("rec", sensitivity.WEIGHT_ONLY)
    again = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, layer_weights=candidates, weights_name="rec")
    assert again.cached and again.noise == rebuilt.noise and again.weights == "rec" and len(calls) == 1
    assert sum(map(sum, rebuilt.noise)) < sum(map(sum, plain.noise))
    in_frac = 0
    for index, per_width in enumerate(candidates()):
        for bits, conv in per_width.items():
            layer = quantize_conv(conv, bits, in_frac, fracs[index])
            got = dequantized_weights(layer)
            if index:
                assert np.array_equal(got, conv.weight.astype(np.float64))
            else:  # in the chip's input units, float32 of folded weights: a kernel may refit to a neighbour
                assert np.linalg.norm(got - conv.weight) < 0.05 * np.linalg.norm(conv.weight)
        in_frac = fracs[index]
    with pytest.raises(SensitivityError, match="together"):
        measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, layer_weights=candidates)


def test_candidates_are_let_go_one_at_a_time(setup, tmp_path, monkeypatch):
    """`measure` takes the candidates one layer at a time (`each_layer_candidates`), each made as it
    is read and kept only in its stored form: when a candidate is made, no earlier one is still
    held; and the numbers are those of the whole list."""
    import weakref

    from chipq.quant import reconstruct as rc
    from chipq.quant.reconstruct import ReconstructConfig, each_layer_candidates

    stack, calib, fracs = setup
    config = ReconstructConfig(positions=512, threads=1, error_feedback=False)
    views = _views(calib)
    whole = [dict(row) for row in each_layer_candidates(stack, fracs, calib, sensitivity.WIDTHS, config)]
    other = measure(stack, views, fracs, _pool, "rms", use_cache=False, layer_weights=lambda: whole, weights_name="rec")
    made, alive = [], []
    quantize_target = rc._quantize_target

    def watched(*args, **kwargs):
        assert not [ref for ref in alive if ref() is not None], "an earlier float candidate is still held"
        weight, bias = quantize_target(*args, **kwargs)
        made.append(1)
        alive.append(weakref.ref(weight))
        return weight, bias

    monkeypatch.setattr(rc, "_quantize_target", watched)
    streamed = lambda: each_layer_candidates(stack, fracs, calib, sensitivity.WIDTHS, config)  # noqa: E731
    one = measure(stack, views, fracs, _pool, "rms", use_cache=False, layer_weights=streamed, weights_name="rec")
    assert len(made) == len(sensitivity.WIDTHS) * len(stack.conv_layers())  # each made once
    assert one.dist2 == other.dist2 and one.noise == other.noise


def test_the_candidates_freed_memory_is_given_back_before_the_passes(setup, monkeypatch):
    """Under the heavy commands' allocator settings what the candidates freed stays resident, and the
    passes' maps grew the heap past it: it is given back once every layer is quantized, before the
    first pass."""
    stack, calib, fracs = setup
    calls = []
    monkeypatch.setattr(sensitivity, "release_freed_memory", lambda: calls.append("release"))
    layer_noise, tail_passes = sensitivity._layer_noise, sensitivity._tail_passes
    monkeypatch.setattr(sensitivity, "_layer_noise", lambda *a: calls.append("noise") or layer_noise(*a))
    monkeypatch.setattr(sensitivity, "_tail_passes", lambda *a: calls.append("tails") or tail_passes(*a))
    measure(stack, _views(calib), fracs, _pool, "rms", use_cache=False, probe=sensitivity.NOISE_GAIN)
    measure(stack, _views(calib), fracs, _pool, "rms", use_cache=False, probe=sensitivity.EXACT)
    assert calls == ["release", "noise", "tails", "release", "tails"]


def test_a_candidate_is_made_when_read(setup, monkeypatch):
    """A row of `each_layer_candidates` holds no candidate: asking whether it has a setting makes
    none, reading one makes it afresh (the same weights each time)."""
    from chipq.quant import reconstruct as rc
    from chipq.quant.reconstruct import ReconstructConfig, each_layer_candidates

    stack, calib, fracs = setup
    row = next(each_layer_candidates(stack, fracs, calib, (1, 2), ReconstructConfig(positions=512, threads=1)))
    calls = []
    quantize_target = rc._quantize_target
    monkeypatch.setattr(rc, "_quantize_target", lambda *a, **k: calls.append(1) or quantize_target(*a, **k))
    assert 2 in row and 3 not in row and list(row) == [1, 2] and not calls
    first, again = row[2], row[2]
    assert len(calls) == 2 and first is not again and np.array_equal(first.weight, again.weight)
    with pytest.raises(KeyError):
        row[3]


def test_first_candidate_is_what_reconstruct_makes_of_conv1(setup):
    """conv1's input is the chip input either way: its candidate is reconstruct's conv1 at that width."""
    from chipq.quant.compress import FAST_RECONSTRUCTION
    from chipq.quant.quantize import quantize_stack
    from chipq.quant.reconstruct import ReconstructConfig, each_layer_candidates, reconstruct

    stack, calib, fracs = setup
    config = ReconstructConfig(**{**FAST_RECONSTRUCTION.__dict__, "positions": 512, "threads": 1})
    first = list(each_layer_candidates(stack, fracs, calib, (2, 4), config))[0]
    for bits in (2, 4):
        rstack, rfracs, _ = reconstruct(stack, [bits, 1, 1, 1], fracs, calib, config)
        want = quantize_stack(rstack, [bits, 1, 1, 1], rfracs, (24, 24))[0].conv_layers()[0]
        from chipq.quant.quantize import quantize_conv

        got = quantize_conv(first[bits], bits, 0, rfracs[0])
        assert np.array_equal(got.int_weights(), want.int_weights())
        assert got.weight_shift == want.weight_shift


def test_v2_axes_measured_combined_and_cached(setup, tmp_path):
    """The a and k axes are measured at m0 on the layers holding enough kernels; the loss of a v2
    setting is the m-axis loss plus the two measured differences (clipped at 0); v1 keys unchanged."""
    from chipq.quant.plan import LayerSpec
    from chipq.quant.sensitivity import NO_V2, V2Axes

    stack, calib, fracs = setup
    axes = V2Axes(alphas=(4, 2), keeps=(50,), at_bits=1, min_share=0.2)
    views = _views(calib)
    result = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes)
    kernels = [6 * 3, 8 * 6, 8 * 8, 6 * 8]  # conv1_1, conv2_1, conv2_2, conv3_1
    eligible = [k / sum(kernels) >= 0.2 for k in kernels]
    assert eligible == [False, True, True, True]
    assert [sorted(row) for row in result.v2] == [[] if not e else ["1a2", "1a4", "1k50"] for e in eligible]
    assert result.v2_bits == 1
    layer = 2
    at = result.v2[layer]
    # 2-bit alpha is worse than 4-bit alpha, and dropping half the kernels costs something
    assert at["1a2"]["dist2"] > at["1a4"]["dist2"]
    assert at["1k50"]["dist2"] > result.dist2[layer][0]
    spec = LayerSpec(3, alpha_bits=2, keep=50)
    base = result.dist2[layer][0]
    want = result.dist2[layer][2] + max(0, at["1a2"]["dist2"] - base, at["1a4"]["dist2"] - base) + max(0, at["1k50"]["dist2"] - base)
    assert result.loss(layer, spec) == pytest.approx(0.5 * want)
    # monotone: a made-up noisy run where 2-bit alpha measured better than 4-bit costs what 4-bit does
    noisy = Sensitivity(**{**result.to_json(), "v2": [dict(row) for row in result.v2]})
    noisy.v2[layer]["1a2"] = {**at["1a2"], "dist2": base - 1.0}
    assert noisy.loss(layer, LayerSpec(1, alpha_bits=2)) == noisy.loss(layer, LayerSpec(1, alpha_bits=4)) > noisy.loss(layer, 1)
    assert result.loss(layer, 3) == result.loss(layer, LayerSpec(3)) == 0.5 * result.dist2[layer][2]
    assert len(result.settings(layer)) == 5 * 3 * 2 and len(result.settings(0)) == 5
    assert result.settings(layer, v2=False) == [LayerSpec(m) for m in range(1, 6)]
    with pytest.raises(SensitivityError, match="not measured"):
        result.loss(0, LayerSpec(1, alpha_bits=4))
    costs = result.costs()
    assert costs[layer][spec] == result.loss(layer, spec)
    # cached with the axes; the v1 measurement has its old key and no v2 rows
    again = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes)
    assert again.cached and again.v2 == result.v2
    plain = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=NO_V2)
    assert plain.key == sensitivity.cache_key(stack, views, fracs, "rms") != result.key and plain.v2 == []
    assert plain.dist2 == result.dist2  # the m axis is the same measurement


def test_a_v2_setting_uses_its_own_candidate_when_given(setup, tmp_path):
    """layer_weights keyed by a LayerSpec (a reconstructed pruned layer) is what that setting runs;
    without one the setting is quantized from its mask width's candidate."""
    from chipq.floatnet.model import FloatConv
    from chipq.quant.plan import LayerSpec
    from chipq.quant.sensitivity import V2Axes

    stack, calib, fracs = setup
    axes = V2Axes(alphas=(), keeps=(50,), at_bits=1, min_share=0.2)
    spec = LayerSpec(1, keep=50)
    convs = stack.conv_layers()

    def candidates(own: bool):
        rows = [{m: conv for m in sensitivity.WIDTHS} for conv in convs]
        if own:  # layer 2's pruned candidate: every weight zero (as far from float as it gets)
            rows[2][spec] = FloatConv(convs[2].name, np.zeros_like(convs[2].weight), convs[2].bias)
        return rows

    views = _views(calib)
    plain = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, use_cache=False,
                    layer_weights=lambda: candidates(False), weights_name="float")  # fmt: skip
    own = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, use_cache=False,
                  layer_weights=lambda: candidates(True), weights_name="float")  # fmt: skip
    assert own.v2[1] == plain.v2[1] and own.dist2 == plain.dist2
    assert own.v2[2]["1k50"]["dist2"] > plain.v2[2]["1k50"]["dist2"]


def test_sampled_layer_output_is_the_chip_layer(setup):
    """The noise gain's layer output at sampled positions (patches times weights, then the
    activations) is the chip layer's convolution at those positions."""
    stack, calib, fracs = setup
    chain = sensitivity._Layers(stack, fracs)
    x = chain.net.run(chain.net.input(calib), 0, chain.positions[1])  # conv2_1's input
    layer = chain.chip(1, chain.quantized(1, 2))
    rows = sensitivity._sample_rows(x.shape, 40, np.random.default_rng(0))
    got = sensitivity._layer_at(layer, sensitivity._patches(x, rows)).numpy()
    full = layer.forward(x).permute(0, 2, 3, 1).reshape(-1, layer.weight.shape[0]).numpy()
    step = 2.0**-layer.frac  # float32 sums in another order: a rounding boundary may move a value one step, rarely
    assert np.max(np.abs(got - full[rows])) <= step + 1e-9
    assert np.mean(np.abs(got - full[rows]) > 1e-9) < 0.02


def test_noise_gain_is_the_exact_run_at_the_gain_setting(setup, tmp_path):
    """With the gain images all the images, the gain setting's numbers are the exact measurement's;
    another setting's distance is the gain run's scaled by its layer-output noise ratio."""
    from chipq.quant.plan import LayerSpec
    from chipq.quant.sensitivity import V2Axes

    stack, calib, fracs = setup
    views = _views(calib)
    axes = V2Axes(alphas=(4,), keeps=(50,), at_bits=1, min_share=0.2)
    probe = sensitivity.Probe(gain_images=len(calib), positions=300, gain_bits=2)
    exact = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, probe=sensitivity.EXACT)
    gain = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, probe=probe)
    assert gain.key != exact.key and not gain.cached
    for layer in range(4):
        assert gain.dist2[layer][1] == pytest.approx(exact.dist2[layer][1], rel=1e-9)
        assert gain.noise[layer][1] == pytest.approx(exact.noise[layer][1], rel=1e-9)
        ratio = gain.layer_noise[layer][0] / gain.layer_noise[layer][1]
        assert gain.dist2[layer][0] == pytest.approx(ratio * exact.dist2[layer][1], rel=1e-9)
        # more mask bits, less noise at the layer's own output
        assert gain.layer_noise[layer][4] < gain.layer_noise[layer][2] < gain.layer_noise[layer][0]
    assert gain.v2[2]["1k50"]["layer_noise"] > gain.layer_noise[2][0]
    assert gain.loss(2, LayerSpec(1, keep=50)) > gain.loss(2, 1)
    assert gain.ref_cosine == pytest.approx(exact.ref_cosine, rel=1e-12)


def test_noise_gain_anchors_each_v2_axis_on_its_own_tail_pass(setup, tmp_path):
    """An axis's anchor setting is measured exactly; the axis's other settings lie between the m0
    run and the anchor, by their layer-output noise (a pruned kernel's noise reaches the descriptor
    otherwise than a rounded one's: one gain for all under-predicted pruning tenfold)."""
    from chipq.quant.sensitivity import V2Axes

    stack, calib, fracs = setup
    views = _views(calib)
    axes = V2Axes(alphas=(5, 4), keeps=(75, 50), at_bits=1, min_share=0.2)
    probe = sensitivity.Probe(gain_images=len(calib), positions=300, gain_bits=1, alpha_anchor=4, keep_anchor=50)
    exact = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, probe=sensitivity.EXACT)
    gain = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, probe=probe)
    single = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, probe=sensitivity.Probe(
        gain_images=len(calib), positions=300, alpha_anchor=0, keep_anchor=0))  # fmt: skip
    assert probe.name().endswith(":anchors-a4k50") and len({gain.key, single.key, exact.key}) == 3
    for layer in (1, 2, 3):  # the layers with the v2 axes
        base = gain.dist2[layer][0]
        assert base == pytest.approx(exact.dist2[layer][0], rel=1e-9)
        for anchor, other in (("1a4", "1a5"), ("1k50", "1k75")):
            row, measured = gain.v2[layer], exact.v2[layer]
            assert row[anchor]["dist2"] == pytest.approx(measured[anchor]["dist2"], rel=1e-9)
            assert row[anchor]["noise"] == pytest.approx(measured[anchor]["noise"], rel=1e-9)
            excess = row[anchor]["layer_noise"] - gain.layer_noise[layer][0]
            share = max(0.0, row[other]["layer_noise"] - gain.layer_noise[layer][0]) / excess if excess > 0 else 0.0
            want = base + share * (measured[anchor]["dist2"] - base)
            assert row[other]["dist2"] == pytest.approx(want, rel=1e-9)
        # without anchors a v2 setting takes the mask width's gain
        ratio = single.v2[layer]["1k50"]["layer_noise"] / single.layer_noise[layer][0]
        assert single.v2[layer]["1k50"]["dist2"] == pytest.approx(ratio * single.dist2[layer][0], rel=1e-9)


def test_noise_gain_mid_alpha_run_splits_the_axis_in_two_segments(setup, tmp_path):
    """With `Probe.alpha_mid` the mid width is measured exactly too; a width above it lies between
    the m0 run and the mid run, one below it between the mid run and the anchor, each by its
    layer-output noise."""
    from chipq.quant.sensitivity import V2Axes

    stack, calib, fracs = setup
    views = _views(calib)
    axes = V2Axes(alphas=(6, 5, 4), keeps=(), at_bits=1, min_share=0.2)
    probe = sensitivity.Probe(gain_images=len(calib), positions=300, alpha_anchor=4, keep_anchor=0, alpha_mid=5)
    exact = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, probe=sensitivity.EXACT)
    gain = measure(stack, views, fracs, _pool, "rms", cache_dir=tmp_path, axes=axes, probe=probe)
    assert probe.name().endswith(":mid-a5") and probe.tail_runs(axes, eligible=True)[-1] == LayerSpec(1, alpha_bits=5)

    def between(layer, setting, low, high):  # `low`'s dist2 plus the share of (high - low) its noise makes
        row = gain.v2[layer]
        noise = lambda text: gain.layer_noise[layer][0] if text == "1" else row[text]["layer_noise"]  # noqa: E731
        dist2 = lambda text: gain.dist2[layer][0] if text == "1" else row[text]["dist2"]  # noqa: E731
        excess = noise(high) - noise(low)
        share = max(0.0, noise(setting) - noise(low)) / excess if excess > 0 else 0.0
        return dist2(low) + share * (dist2(high) - dist2(low))

    for layer in (1, 2, 3):
        for measured in ("1a5", "1a4"):
            assert gain.v2[layer][measured]["dist2"] == pytest.approx(exact.v2[layer][measured]["dist2"], rel=1e-9)
        assert gain.v2[layer]["1a6"]["dist2"] == pytest.approx(between(layer, "1a6", "1", "1a5"), rel=1e-9)


def test_candidates_refitted_only_where_asked(setup):
    """each_layer_candidates with `refitted`: every setting without the joint α refit, the asked ones
    also with it (the same weights as without `refitted`)."""
    from chipq.quant.compress import FAST_RECONSTRUCTION
    from chipq.quant.plan import LayerSpec
    from chipq.quant.reconstruct import ReconstructConfig, Refitted, each_layer_candidates

    stack, calib, fracs = setup
    config = ReconstructConfig(**{**FAST_RECONSTRUCTION.__dict__, "positions": 512, "threads": 1})
    plain = ReconstructConfig(**{**config.__dict__, "refit_alphas": False})
    both = list(each_layer_candidates(stack, fracs, calib, (1, 2), config, refitted=(LayerSpec(1),)))
    full = list(each_layer_candidates(stack, fracs, calib, (1, 2), config))
    none = list(each_layer_candidates(stack, fracs, calib, (1, 2), plain))
    for layer in range(4):
        assert sorted(map(str, both[layer])) == sorted(["1", "2", str(Refitted(LayerSpec(1)))])
        assert np.array_equal(both[layer][Refitted(LayerSpec(1))].weight, full[layer][1].weight)
        for m in (1, 2):
            assert np.array_equal(both[layer][m].weight, none[layer][m].weight)
    assert not np.array_equal(both[0][1].weight, full[0][1].weight)
