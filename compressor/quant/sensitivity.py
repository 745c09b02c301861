"""How much each conv layer's mask width costs in fidelity, measured one layer at a time.

The exact measurement (`EXACT`, the default; `NOISE_GAIN` estimates it, below): for
every conv layer L and mask width m in 1..5, the network is run with **only L quantized** at m
bits (Eq. 1 exactly as `quantize_conv` builds it: 8-bit alpha, m-bit masks, the layer's weight
shift, the 12-bit bias — of L's float weights, or of the weights `layer_weights` gives for (L, m),
e.g. L as post-training reconstruction fits it, `chipq.quant.reconstruct.each_layer_candidates`) and
every other layer in float, all of them with the chip's 8-bit
activations ``clip(round_half_up(x * 2**f), 0, 255) * 2**-f`` at the calibrated fraction bits, and
conv1 on the chip's input ``p − mean_int`` with the normalisation folded in (SPEC 6), all of it run
by the torch model of the chip (`chipq.quant.chipnet.ChipNet`, L swapped in). The conv5_3
maps of the calibration images are compared with those of the float model:

- the retrieval descriptor (a `pool` function given by the caller, e.g. NIP over four rotations:
  this package sits below `chipq.retrieval`, so the descriptor is passed in) — mean cosine to the
  float descriptor, and the mean squared distance to the descriptor of the *reference* run
  (8-bit activations, every layer float);
- the conv5_3 SQNR to float, and the noise power relative to the reference run.

The reference is what every plan shares; the per-layer numbers are what choosing m for L adds to
it. Under the usual assumption that quantization errors of different layers are uncorrelated, their
squared distances add (``||a + e1 + e2 − f||² ≈ ||a − f||² + ||e1||² + ||e2||²``), which for unit
descriptors gives the additive prediction `Sensitivity.predict` uses and `chipq.quant.allocate`
optimises:

    1 − cos(plan) ≈ (1 − cos(reference)) + ½ Σ_L dist²(L, m_L)

**Chip format v2 settings** (alpha width a < 8, kept share k < 100 %, `chipq.quant.plan.LayerSpec`).
Measuring every (m, a, k) of every layer would be 5 x 4 x 6 = 120 tail passes per layer instead of
5. Instead (`V2Axes`) the m axis is measured as above, and on the layers that hold at least
`V2Axes.min_share` of the model's kernels (on VGG-16 conv3_1..conv5_3: 98 % of the kernels, and the
cheap tail passes) the a axis and the k axis are measured once each, at one mask width m0 (1 bit:
under budgets below the paper's those layers sit at 1 bit), each a single-layer run like the others.
What narrowing alpha and dropping kernels add is combined additively:

    dist2(L, m, a, k) ≈ dist2(L, m) + [dist2(L, m0, a) − dist2(L, m0)] + [dist2(L, m0, k) − dist2(L, m0)]

each bracket made monotone and clipped at 0 (a narrower alpha or fewer kernels never makes a layer
closer to float: a bracket is the largest difference measured at that setting or a richer one of
its axis, so measurement noise can neither make a cut free nor rank a deeper cut cheaper). The additivity rests on the same assumption of
uncorrelated errors: alpha rounding moves each kernel's scale, dropping removes whole kernels, and
the mask width shapes the kept ones. At m > m0 a dropped kernel loses more than it did at m0 (its
finer mask had less error), so the k bracket is optimistic there; the planner's measured check (and
`bench/v2_curve.py`) compare the prediction with the compressed blob. Cost on VGG-16: 8 extra tail
passes on the layers from conv3_1, about 1.8x the m axis alone.

**Noise gain** (`NOISE_GAIN`, opt-in: `chipq plan --probe noise-gain`; HAWQ-style). A tail pass
per setting is what the measurement above costs: 5 per layer, 13 on the big ones, 145 on VGG-16
per view. Instead, each setting s of layer L is measured where it acts, at L's own output: the
noise power it adds there (after the chip's activations, L's input the reference's) over the
reference output's power, ``noise_L(s)``, on `Probe.positions` sampled output positions of the
first view of every image (a matrix product of the sampled patches, no tail). A few tail passes
per layer, on the first `Probe.gain_images` images with all their views, turn it into descriptor
distance. A mask width's, from the gain run g (`Probe.gain_bits`-bit masks):

    dist2(L, m) ≈ dist2(L, g) · noise_L(m) / noise_L(g)

and a v2 setting's, from its axis's anchor run A (`Probe.alpha_anchor`, `Probe.keep_anchor`: the
narrowest alpha and the fewest kernels measured, so that the other settings lie between m0 and A):

    dist2(L, s) ≈ dist2(L, m0) + [dist2(L, A) − dist2(L, m0)] · (noise_L(s) − noise_L(m0)) / (noise_L(A) − noise_L(m0))

and the conv5_3 noise likewise (the cosine then follows the additive model). The tail from L is
the same network whichever setting made the noise, so a gain is a property of the layer and the
kind of noise: one gain for every setting under-predicted pruning's cost on the real VGG-16 (its
2 MB plan: predicted cosine 0.960, 0.835 by the exact measurement, 0.731 measured on held-out
photos; a pruned kernel's error is not a rounded one's), hence one anchor per axis. Interpolated
between m0 and an anchor 50 % kept, pruning to 30 % was under-predicted by up to 40 %: the anchors
are the axes' far ends. The α axis has a second run at 5 bits (`Probe.alpha_mid`), each segment
(m0 to 5 bits, 5 to 4 bits) scaled by its own ends: at 1-bit masks the mask error is most of a
layer's output noise, and narrowing α to 5 bits added about 1 % of the noise 4 bits add but a
quarter of its descriptor distance (the exact measurement, conv4_3: 2.0 against 8.0 x 10^-3). Scaled
from the 4-bit anchor alone, 5 and 6 bits came out about 30x too cheap, and the 3.9 MB plan took
5-bit α on four 2-bit layers: post-training 0.018 mAP (−0.030..−0.007) below the exact measurement's
plan on held-out photos; with the 5-bit run −0.010 (−0.024..+0.002). With candidates made without the joint α refit but for the tail-pass
settings (`chipq.quant.reconstruct.each_layer_candidates`' ``refitted``, as `chipq.pipeline.plan`
makes them: the refit is 10^10 multiply-adds per setting of a 512-channel layer), the noise ratios
come from the unrefitted candidates and the tail passes run the refitted ones
(`_Layers.gain_layer`): what the refit saves is taken as the same share of the noise at every
setting of an axis. Cost on VGG-16: one prefix pass of one view of 16 images with 145 products of
4096 sampled patches, and 41 tail passes on 4 images x 4 views, against 145 on 16 x 4.

A run is cached in ``$CHIPQ_CACHE/sensitivity`` (else ``~/.cache/chipq/sensitivity``) as JSON,
keyed by the model's weights SHA-256, the images' SHA-256, the settings and the probe; a cache hit
costs nothing. The exact run is one shared prefix pass plus, per layer, a pass of the layers after
it per setting: about 3.5 full forward passes per width, per image view, on VGG-16.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from chipq.errors import ChipqError
from chipq.executor.memory import release_freed_memory
from chipq.floatnet.model import FloatConv, FloatStack
from chipq.floatnet.reference import FloatReference
from chipq.formats import constants as C
from chipq.formats.fileio import FileRefused, atomic_write
from chipq.formats.model import ConvLayer
from chipq.quant import PROBE, PROBES
from chipq.quant.chipnet import ChipConv, ChipNet, activations, on_chip_input
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import as_spec, quantize_conv
from chipq.quant.reconstruct import Refitted

SENSITIVITY_VERSION = 1  # bump when the measurement changes: old cache entries are then ignored
WIDTHS = tuple(range(C.MIN_MASK_BITS, C.MAX_MASK_BITS + 1))

WEIGHT_ONLY = "weight-only"  # each (layer, m) quantized from its float weights (`quantize_conv`)

Pool = Callable[[np.ndarray], np.ndarray]  # one image's views' maps (R, C, h, w) -> descriptor (D,)
Progress = Callable[[int, int], None]  # (done, total) passes


class SensitivityError(ChipqError):
    """The images or settings cannot be measured (wrong shape, no conv layer)."""


@dataclass(frozen=True)
class V2Axes:
    """The chip format v2 settings measured per layer (module docstring).

    Attributes:
        alphas: alpha widths below 8 measured (each a candidate of the planner).
        keeps: kept shares below 100 % measured.
        at_bits: the mask width m0 both axes are measured at.
        min_share: a layer gets the axes when it holds at least this share of the model's kernels.
    """

    alphas: tuple[int, ...] = (6, 5, 4)
    keeps: tuple[int, ...] = (75, 60, 50, 40, 30)
    at_bits: int = 1
    min_share: float = 0.02

    def settings(self) -> list[LayerSpec]:
        """The extra single-layer runs of an eligible layer: the a axis, then the k axis, at m0."""
        return [LayerSpec(self.at_bits, alpha_bits=a) for a in self.alphas] + [
            LayerSpec(self.at_bits, keep=k) for k in self.keeps
        ]

    def eligible(self, kernels: list[int]) -> list[bool]:
        """Which layers (kernel counts O*I in conv order) get the axes."""
        total = sum(kernels) or 1
        return [bool(self.settings()) and count / total >= self.min_share for count in kernels]

    def candidates(self, kernels: list[int]) -> list[list[LayerSpec]]:
        """Every setting the planner may give each layer (kernel counts O*I in conv order), known
        before anything is measured: every m, crossed with the axes on the eligible layers."""
        rows = []
        for eligible in self.eligible(kernels):
            alphas = (C.ALPHA_BITS, *self.alphas) if eligible else (C.ALPHA_BITS,)
            keeps = (100, *self.keeps) if eligible else (100,)
            rows.append([LayerSpec(m, a, k) for m in WIDTHS for a in alphas for k in keeps])
        return rows

    def key(self) -> dict:
        return {"alphas": list(self.alphas), "keeps": list(self.keeps), "at_bits": self.at_bits, "min_share": self.min_share}


# Names how a v2 setting is quantized in the cache key: change it when that changes.
V2_QUANTIZER = "quantize_conv-spec-2"  # 2: pruned kernels chosen by OBS saliency

@dataclass(frozen=True)
class Probe:
    """How `measure` measures each single-layer setting (module docstring, "Noise gain").

    Attributes:
        gain_images: the images (each with all its views) whose tail passes give each layer's gain,
            one pass per layer at `gain_bits` and one per anchor; 0: the exact measurement, a tail
            pass per setting on every image.
        positions: output positions sampled per layer (over every image's first view) for the
            noise each setting adds at its own layer's output.
        gain_bits: the mask width of the gain run (8-bit alpha, every kernel).
        seed: seeds the position sampling.
        alpha_anchor: the alpha width whose tail pass gives the alpha axis its own gain (0: none,
            the axis takes the mask width's gain).
        keep_anchor: the kept share whose tail pass gives the kept-share axis its own gain (0: none).
        alpha_mid: an alpha width between 8 and `alpha_anchor` with a tail pass of its own (0: none):
            the axis is then two segments, m0..mid and mid..anchor, each scaled by its own ends.
    """

    gain_images: int = 4
    positions: int = 4096
    gain_bits: int = 1
    seed: int = 0
    alpha_anchor: int = 4
    keep_anchor: int = 30
    alpha_mid: int = 0

    @property
    def exact(self) -> bool:
        return self.gain_images <= 0

    def name(self) -> str:
        if self.exact:
            return "exact"
        anchors = f":anchors-a{self.alpha_anchor}k{self.keep_anchor}" if self.alpha_anchor or self.keep_anchor else ""
        mid = f":mid-a{self.alpha_mid}" if self.alpha_mid else ""
        return f"noise-gain:{self.gain_images}img:{self.positions}pos:m{self.gain_bits}:seed{self.seed}{anchors}{mid}"

    def anchors(self, axes: V2Axes) -> dict[str, LayerSpec]:
        """The anchor run of each v2 axis of `axes` that has one ("alpha_bits", "keep" -> setting at m0)."""
        found = {}
        if self.alpha_anchor in axes.alphas:
            found["alpha_bits"] = LayerSpec(axes.at_bits, alpha_bits=self.alpha_anchor)
        if self.keep_anchor in axes.keeps:
            found["keep"] = LayerSpec(axes.at_bits, keep=self.keep_anchor)
        return found

    def mid(self, axes: V2Axes) -> LayerSpec | None:
        """The alpha axis's mid run (`alpha_mid`) when it lies strictly between 8 bits and its anchor."""
        if "alpha_bits" in self.anchors(axes) and self.alpha_mid in axes.alphas and self.alpha_mid > self.alpha_anchor:
            return LayerSpec(axes.at_bits, alpha_bits=self.alpha_mid)
        return None

    def tail_runs(self, axes: V2Axes, eligible: bool) -> list[LayerSpec]:
        """The settings of one layer that get a tail pass: the gain setting, and on a layer with the
        v2 axes their base m0, their anchors and the α axis's mid run."""
        runs = [LayerSpec(self.gain_bits)]
        anchors = list(self.anchors(axes).values()) if eligible else []
        mid = self.mid(axes) if eligible else None
        if anchors and LayerSpec(axes.at_bits) not in runs:
            runs.append(LayerSpec(axes.at_bits))
        return runs + anchors + ([mid] if mid else [])


EXACT = Probe(gain_images=0)
NOISE_GAIN = Probe(alpha_mid=5)  # the 5-bit run: the 4-bit anchor alone scaled 5 and 6 bits 30x too cheap on VGG-16 (module docstring)
BY_NAME = dict(zip(PROBES, (EXACT, NOISE_GAIN)))  # `chipq.quant.PROBES` -> its Probe
DEFAULT_PROBE = BY_NAME[PROBE]  # `chipq.quant.PROBE`, where the choice and its measurement are

NO_V2 = V2Axes(alphas=(), keeps=())  # v1 settings only: the m axis (what the cache held before v2)
DEFAULT_V2 = V2Axes()


@dataclass
class Sensitivity:
    """Per-layer, per-width fidelity of a model on a set of images (see the module docstring).

    Lists indexed ``[layer][m - 1]``, layers in conv order.
    """

    layers: list[str]
    images: int
    views: int
    ref_cosine: float  # 8-bit activations, float weights: mean descriptor cosine to float
    ref_noise: float  # its conv5_3 noise power / signal power
    cosine: list[list[float]]  # only L at m bits: mean descriptor cosine to float
    dist2: list[list[float]]  # mean ||d(L, m) − d(reference)||² per image
    sqnr_db: list[list[float]]  # conv5_3 SQNR to float, dB
    noise: list[list[float]]  # ||map(L, m) − map(reference)||² / ||map(float)||²
    seconds: float  # what the measurement cost (wall clock), cached or not
    key: str = ""
    cached: bool = field(default=False)
    weights: str = WEIGHT_ONLY  # how each (layer, m) was quantized (`measure`'s weights_name)
    v2_bits: int = 0  # m0 of the v2 axes (0: none measured)
    # per layer: setting text ("1a5", "1k40") -> {"cosine", "dist2", "sqnr_db", "noise"} at m0
    v2: list[dict[str, dict[str, float]]] = field(default_factory=list)
    # noise gain (`Probe`): each (layer, m)'s relative noise at its own layer's output (empty: exact)
    layer_noise: list[list[float]] = field(default_factory=list)
    method: str = "exact"  # `Probe.name` of how the numbers were measured

    def settings(self, layer: int, v2: bool = True) -> list[LayerSpec]:
        """The candidate settings of `layer`: every m, crossed with the measured alpha widths and
        kept shares (when `v2`)."""
        alphas, keeps = {8}, {100}
        if v2 and self.v2:
            for text in self.v2[layer]:
                spec = _spec(text)
                alphas.add(spec.alpha_bits)
                keeps.add(spec.keep)
        return [LayerSpec(m, a, k) for m in WIDTHS for a in sorted(alphas, reverse=True) for k in sorted(keeps, reverse=True)]

    def _field(self, layer: int, setting: LayerSpec | int, name: str) -> float:
        """`name` (dist2 or noise) of `layer` at `setting`, by the additive model for v2 settings."""
        spec = as_spec(setting)
        grid = self.dist2 if name == "dist2" else self.noise
        value = grid[layer][spec.bits - 1]
        if spec.alpha_bits != C.ALPHA_BITS:
            value += self._added(layer, spec, name, "alpha_bits")
        if spec.keep != 100:
            value += self._added(layer, spec, name, "keep")
        return value

    def _added(self, layer: int, spec: LayerSpec, name: str, axis: str) -> float:
        """What one v2 axis (``alpha_bits`` or ``keep``) adds at `spec`'s value over the m0 run.

        The largest measured difference among the settings of that axis no richer than `at` (a
        narrower alpha or fewer kernels never costs less), clipped at 0: measurement noise cannot
        make a cut free or rank a deeper cut above a shallower one.
        """
        at, full = getattr(spec, axis), getattr(LayerSpec(1), axis)
        runs = [_spec(text) for text in (self.v2[layer] if self.v2 else {})]
        runs = [run for run in runs if getattr(run, axis) != full]  # this axis's runs
        if not any(getattr(run, axis) == at for run in runs):
            raise SensitivityError(f"layer {self.layers[layer]}: {spec} was not measured (no {axis} {at} run)")
        grid = self.dist2 if name == "dist2" else self.noise
        base = grid[layer][self.v2_bits - 1]
        return max(0.0, *(self.v2[layer][str(run)][name] - base for run in runs if getattr(run, axis) >= at))

    def loss(self, layer: int, setting: LayerSpec | int) -> float:
        """The additive cost `chipq.quant.allocate` minimises: half the squared descriptor distance."""
        return 0.5 * self._field(layer, setting, "dist2")

    def costs(self, v2: bool = True) -> list[dict[LayerSpec, float]]:
        """Per layer, every candidate setting -> its loss (`chipq.quant.allocate.pareto_front`)."""
        return [{spec: self.loss(i, spec) for spec in self.settings(i, v2)} for i in range(len(self.layers))]

    def predict(self, plan: list[LayerSpec | int]) -> dict[str, float]:
        """Predicted mean descriptor cosine and conv5_3 SQNR of a whole plan (additive model)."""
        if len(plan) != len(self.layers):
            raise SensitivityError(f"plan has {len(plan)} widths for {len(self.layers)} conv layers")
        cosine = self.ref_cosine - sum(self.loss(i, s) for i, s in enumerate(plan))
        noise = self.ref_noise + sum(self._field(i, s, "noise") for i, s in enumerate(plan))
        return {"cosine": cosine, "sqnr_db": _db(noise)}

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("cached")
        return data


def _spec(text: str) -> LayerSpec:
    """A setting text of the v2 grid ("1a5", "1k40") back to its LayerSpec."""
    from chipq.quant.plan import parse_specs

    return parse_specs(text, ["layer"])[0]


def _db(noise: float) -> float:
    return float("inf") if noise <= 0 else -10.0 * math.log10(noise)


def default_cache_dir() -> Path:
    """``$CHIPQ_CACHE`` if set, else ``~/.cache/chipq`` (the same rule as `chipq fetch-vgg16`)."""
    return Path(os.environ.get("CHIPQ_CACHE") or Path.home() / ".cache" / "chipq")


def cache_key(
    stack: FloatStack, views: np.ndarray, act_fracs: list[int], pool_name: str, weights_name: str = WEIGHT_ONLY,
    axes: V2Axes = NO_V2,
    probe: Probe = DEFAULT_PROBE,
) -> str:
    """SHA-256 of what the measurement depends on: weights, images, fractions, descriptor, how each
    layer is quantized, the v2 axes, version."""
    images = hashlib.sha256(np.ascontiguousarray(views).tobytes()).hexdigest()
    settings = {
        "version": SENSITIVITY_VERSION,
        "weights_sha256": stack.weights_sha256(),
        "mean": list(stack.mean),
        "std": list(stack.std),
        "images_sha256": images,
        "shape": list(views.shape),
        "act_fracs": [int(f) for f in act_fracs],
        "pool": pool_name,
        "widths": list(WIDTHS),
    }
    if not probe.exact:  # the exact measurement's keys stay what they were (their cache entries still hit)
        settings["method"] = probe.name()
    if weights_name != WEIGHT_ONLY:  # weight-only keys stay what they were (their cache entries still hit)
        settings["layer_weights"] = weights_name
    if axes.settings():  # v1-only keys stay what they were
        settings["v2_axes"] = axes.key() | {"quantizer": V2_QUANTIZER}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


@dataclass
class _Tally:
    """Running sums for one (layer, width) over images."""

    cosine: float = 0.0
    dist2: float = 0.0
    err_float: float = 0.0
    err_ref: float = 0.0


def measure(
    stack: FloatStack,
    views: np.ndarray,
    act_fracs: list[int],
    pool: Pool,
    pool_name: str,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    batch: int = 2,
    progress: Progress | None = None,
    layer_weights: Callable[[], Iterable[Mapping[int | LayerSpec, FloatConv]]] | None = None,
    weights_name: str = WEIGHT_ONLY,
    axes: V2Axes = NO_V2,
    probe: Probe = DEFAULT_PROBE,
) -> Sensitivity:
    """Measure (or read from the cache) the sensitivity of every conv layer at every width.

    Args:
        stack: the float model (a trailing pool is dropped).
        views: uint8 (N, R, 3, H, W): N calibration images, R network inputs each (e.g. the four
            NIP rotations), every one the chip's input size.
        act_fracs: each conv layer's calibrated output fraction bits (`chipq.quant.compress.calibrate`).
        pool: one image's R conv5_3 maps -> its descriptor.
        pool_name: names `pool` in the cache key (change it when `pool` changes).
        cache_dir: default `default_cache_dir()`.
        use_cache: read and write the cache.
        batch: images per pass (memory: VGG-16 at 224x224 needs ~50 MB per view).
        progress: called with (done, total) after each image's passes.
        layer_weights: None: layer L at m bits is `quantize_conv` of its float weights. Else called
            (only when the cache misses) for ``[layer][m or LayerSpec] -> FloatConv``, the float weights each
            (layer, m) is quantized from instead, conv1's acting on the chip input
            (e.g. `chipq.quant.reconstruct.each_layer_candidates`): any iterable of the layers'
            rows in order; each row is quantized as it comes and then let go.
        weights_name: names `layer_weights` in the cache key (it must change when they do).
        axes: the v2 settings measured per layer (module docstring); `NO_V2`: the m axis only. A v2
            setting of layer L is `quantize_conv` of its own candidate when `layer_weights` gives
            one (keyed by the LayerSpec), else of L's m0 candidate (narrowed and pruned weight-only).
        probe: how each setting is measured (`Probe`; `EXACT`: a tail pass per setting).
    """
    started = time.perf_counter()
    stack = stack.without_trailing_pool()
    convs = stack.conv_layers()
    if not convs:
        raise SensitivityError("the model has no conv layer")
    if not isinstance(views, np.ndarray) or views.dtype != np.uint8 or views.ndim != 5 or views.shape[2] != 3:
        raise SensitivityError(f"views: expected uint8 (N, R, 3, H, W), got {getattr(views, 'shape', views)}")
    if views.shape[0] == 0 or views.shape[1] == 0:
        raise SensitivityError("views: no image")
    if len(act_fracs) != len(convs):
        raise SensitivityError(f"{len(act_fracs)} fraction bits for {len(convs)} conv layers")
    if (layer_weights is None) != (weights_name == WEIGHT_ONLY):
        raise SensitivityError("layer_weights and weights_name go together")
    key = cache_key(stack, views, act_fracs, pool_name, weights_name, axes, probe)
    path = (cache_dir or default_cache_dir()) / "sensitivity" / f"{key}.json"
    if use_cache:
        hit = _read_cache(path, key, [c.name for c in convs])
        if hit is not None:
            hit.seconds = time.perf_counter() - started
            return hit
    # not bound to a name here: each layer's float candidates are freed once `_measure` has quantized them
    result = _measure(stack, views, act_fracs, pool, batch, progress, layer_weights() if layer_weights else None, axes, probe)
    result.key = key
    result.weights = weights_name
    result.seconds = time.perf_counter() - started
    if use_cache:
        _write_cache(path, result)
    return result


def _read_cache(path: Path, key: str, names: list[str]) -> Sensitivity | None:
    """The cached run, or None when absent or unreadable (a damaged entry is measured again)."""
    try:
        data = json.loads(path.read_text())
        result = Sensitivity(**{**data, "cached": True})
    except (OSError, ValueError, TypeError):
        return None
    shape_ok = all(len(getattr(result, f)) == len(names) for f in ("cosine", "dist2", "sqnr_db", "noise"))
    shape_ok = shape_ok and (not result.v2 or len(result.v2) == len(names))
    if result.key != key or result.layers != names or not shape_ok:
        return None
    return result


def _write_cache(path: Path, result: Sensitivity) -> None:
    """Atomic write (`chipq.formats.fileio.atomic_write`); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(result.to_json(), indent=1).encode(), what="sensitivity cache")
    except (OSError, FileRefused):
        pass


class _Layers:
    """The float stack on the chip's input with 8-bit activations (`ChipNet.of_stack`), and each conv
    layer quantized alone at any width, to be swapped into it.

    A quantized layer is kept as the chip stores it (`ConvLayer`: a byte of α and one of mask code
    per tap, 10 bytes a kernel against float32's 36) and made a torch layer only while it runs
    (`chip`): all 145 settings of VGG-16 as float32 were 0.75 GB.
    """

    def __init__(self, stack: FloatStack, act_fracs: list[int]) -> None:
        self.net = ChipNet.of_stack(stack, act_fracs)
        self.convs = [item for item in on_chip_input(stack) if isinstance(item, FloatConv)]
        self.positions = self.net.conv_positions()  # conv index -> position in the chain
        self.fracs = [int(f) for f in act_fracs]

    def quantized(self, index: int, setting: LayerSpec | int, row: Mapping | None = None) -> ConvLayer:
        """Layer `index` stored as `setting` (Eq. 1, its input at the calibrated fraction bits):
        from `row`'s candidate for the setting (else, a v2 setting, its mask width's) when a row
        of candidates is given, else from the float weights."""
        spec = as_spec(setting)
        conv = self.convs[index] if row is None else row[spec] if spec in row else row[spec.bits]
        return quantize_conv(conv, spec, self._in_frac(index), self.fracs[index])

    def gain_layer(self, index: int, spec: LayerSpec, row: Mapping | None, plain: ConvLayer) -> ConvLayer:
        """The noise gain's tail-pass layer: the setting's `Refitted` candidate when there is one
        (the others then made without the joint α refit), else `plain`, its `quantized` layer."""
        refitted = row.get(Refitted(spec)) if row is not None else None
        if refitted is None:
            return plain
        return quantize_conv(refitted, spec, self._in_frac(index), self.fracs[index])

    def chip(self, index: int, layer: ConvLayer) -> ChipConv:
        """A stored layer `index` as the torch chip runs it."""
        return ChipConv.of_layer(layer, self._in_frac(index))

    def _in_frac(self, index: int) -> int:
        return 0 if index == 0 else self.fracs[index - 1]


def _measure(
    stack: FloatStack,
    views: np.ndarray,
    act_fracs: list[int],
    pool: Pool,
    batch: int,
    progress: Progress | None,
    candidates: Iterable[Mapping[int | LayerSpec, FloatConv]] | None = None,
    axes: V2Axes = NO_V2,
    probe: "Probe | None" = None,
) -> Sensitivity:
    probe = probe or DEFAULT_PROBE
    chain = _Layers(stack, act_fracs)
    eligible = axes.eligible([int(c.weight.shape[0] * c.weight.shape[1]) for c in chain.convs])
    runs = [
        [LayerSpec(m) for m in WIDTHS] + (axes.settings() if eligible[i] else []) for i in range(len(chain.convs))
    ]  # the single-layer runs of each layer: the m axis, then its v2 axes
    tail_runs = [probe.tail_runs(axes, eligible[i]) for i in range(len(chain.convs))]  # the noise gain's
    quantized, gain_layers, count = {}, {}, 0
    # no `enumerate`: it would hold the last row while the next is made; `del row` lets it go
    for row in candidates if candidates is not None else [None] * len(chain.convs):
        if count >= len(chain.convs):
            raise SensitivityError(f"layer weights for more than the {len(chain.convs)} conv layers")
        quantized.update({(count, spec): chain.quantized(count, spec, row) for spec in runs[count]})
        if not probe.exact:
            gain_layers.update({(count, spec): chain.gain_layer(count, spec, row, quantized[(count, spec)]) for spec in tail_runs[count]})
        count += 1
        del row  # the float candidates go; what is kept is their stored form
    if count != len(chain.convs):
        raise SensitivityError(f"layer weights for {count} of {len(chain.convs)} conv layers")
    # the candidates' freed statistics and maps given back before the passes (under the heavy
    # commands' allocator settings they stay resident, and the passes' maps grew the heap past them)
    release_freed_memory()
    batch = max(1, int(batch))
    if probe.exact:
        tails = _tail_passes(chain, stack, views, pool, batch, runs, quantized, _Stage(progress, 0, len(views)))
        rows = {key: tails.row(key) for key in quantized}
    else:
        gain_views = views[: max(1, probe.gain_images)]
        stage_total = len(views) + len(gain_views)
        noise = _layer_noise(chain, views[:, 0], runs, quantized, probe, _Stage(progress, 0, stage_total))
        tails = _tail_passes(chain, stack, gain_views, pool, batch, tail_runs, gain_layers, _Stage(progress, len(views), stage_total))
        rows = _interpolated(tails, noise, runs, probe, axes)
    return _result(chain, views.shape, tails, rows, runs, axes, probe)


def _interpolated(tails: _Tails, noise: dict, runs: list[list[LayerSpec]], probe: Probe, axes: V2Axes) -> dict:
    """Every setting's numbers by the noise gain (module docstring): a mask width's from the gain
    run's (zero noise, zero distance at the reference); a v2 setting's from its axis's anchor run
    and the m0 run, by its layer-output noise between theirs (no anchor: the gain run's, as a mask
    width's)."""
    gain = LayerSpec(probe.gain_bits)
    anchors, mid = probe.anchors(axes), probe.mid(axes)
    rows = {}
    for index, specs in enumerate(runs):
        # the mask widths first (m0 is a v2 setting's base), then the measured v2 runs (an anchor, the mid run)
        for spec in sorted(specs, key=lambda s: (s.uses_v2, (index, s) not in tails.tallies)):
            axis = "alpha_bits" if spec.alpha_bits != C.ALPHA_BITS else "keep" if spec.keep != 100 else None
            anchor = anchors.get(axis) if axis else None
            key = (index, spec)
            if anchor is None or (index, anchor) not in tails.tallies:
                rows[key] = tails.interpolated((index, gain), noise[key], noise[(index, gain)])
            elif key in tails.tallies:  # measured
                rows[key] = {**tails.row(key), "layer_noise": noise[key]}
            else:  # between m0 and the anchor, or with a mid run, on its segment of the axis
                lower = (index, LayerSpec(spec.bits))
                if axis == "alpha_bits" and mid is not None and (index, mid) in tails.tallies:
                    if spec.alpha_bits > mid.alpha_bits:
                        anchor = mid
                    else:
                        lower = (index, mid)
                rows[key] = tails.interpolated((index, anchor), noise[key], noise[(index, anchor)], rows[lower], noise[lower])
    return rows


@dataclass
class _Stage:
    """Progress of one stage of `_measure`, as part of the whole: images done after `offset`."""

    progress: Progress | None
    offset: int
    total: int

    def __call__(self, done: int) -> None:
        if self.progress:
            self.progress(self.offset + done, self.total)


@dataclass
class _Tails:
    """The tail passes of `_tail_passes`: per (layer, setting) tallies and the reference's sums."""

    tallies: dict[tuple[int, LayerSpec], _Tally]
    images: int
    ref_cos: float
    ref_err: float
    signal: float

    def row(self, key: tuple[int, LayerSpec]) -> dict[str, float]:
        """The measured numbers of one single-layer run (the exact measurement)."""
        t = self.tallies[key]
        return {
            "cosine": t.cosine / self.images, "dist2": t.dist2 / self.images,
            "sqnr_db": _db(t.err_float / self.signal), "noise": t.err_ref / self.signal,
        }  # fmt: skip

    def interpolated(
        self, anchor: tuple[int, LayerSpec], noise: float, anchor_noise: float, base: dict | None = None, base_noise: float = 0.0
    ) -> dict[str, float]:
        """A setting's numbers by the noise gain (module docstring): the `base` row's (None: the
        reference's, zero) plus what the `anchor` run measured beyond it, scaled by the setting's
        layer-output `noise` beyond `base_noise` over the anchor's (an anchor that adds no noise
        there scales nothing: the setting is the base)."""
        t = self.tallies[anchor]
        base_dist2, base_noise_out = (base["dist2"], base["noise"]) if base else (0.0, 0.0)
        excess = anchor_noise - base_noise
        ratio = max(0.0, noise - base_noise) / excess if excess > 0 else 0.0
        dist2 = base_dist2 + ratio * (t.dist2 / self.images - base_dist2)
        out_noise = base_noise_out + ratio * (t.err_ref / self.signal - base_noise_out)
        return {
            "cosine": self.ref_cos / self.images - 0.5 * dist2, "dist2": dist2,
            "sqnr_db": _db(self.ref_err / self.signal + out_noise), "noise": out_noise, "layer_noise": noise,
        }  # fmt: skip


def _tail_passes(chain, stack, views, pool, batch, runs, quantized, stage: _Stage) -> _Tails:
    """Every image's views through the float model, the reference, and for each layer each of its
    `runs` swapped in alone from that layer on (the shared prefix run once per layer)."""
    net = chain.net
    reference = FloatReference(stack, batch=8)
    n_views = views.shape[1]
    tallies = {(i, spec): _Tally() for i, specs in enumerate(runs) for spec in specs}
    ref_cos, ref_err, signal = 0.0, 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(views), batch):
            chunk = views[start : start + batch]
            k = chunk.shape[0]
            flat = chunk.reshape(k * n_views, *chunk.shape[2:])
            f_maps = reference.run(np.ascontiguousarray(flat)).astype(np.float64)
            f_desc = _descriptors(f_maps, k, n_views, pool)
            signal += float(np.sum(f_maps**2))
            x = net.input(flat)
            r_maps = net.run(x).numpy().astype(np.float64)
            r_desc = _descriptors(r_maps, k, n_views, pool)
            ref_cos += float(np.sum(_cosines(r_desc, f_desc)))
            ref_err += float(np.sum((r_maps - f_maps) ** 2))
            pos = 0  # x is the reference input of net.layers[pos]
            for index, specs in enumerate(runs):
                x = net.run(x, pos, chain.positions[index])
                pos = chain.positions[index]
                for spec in specs:
                    maps = net.run(x, pos, swap={pos: chain.chip(index, quantized[(index, spec)])}).numpy().astype(np.float64)
                    desc = _descriptors(maps, k, n_views, pool)
                    tally = tallies[(index, spec)]
                    tally.cosine += float(np.sum(_cosines(desc, f_desc)))
                    tally.dist2 += float(np.sum((desc - r_desc) ** 2))
                    tally.err_float += float(np.sum((maps - f_maps) ** 2))
                    tally.err_ref += float(np.sum((maps - r_maps) ** 2))
            stage(min(start + k, len(views)))
    return _Tails(tallies, len(views), ref_cos, ref_err, signal or 1.0)


def _layer_noise(chain, pixels, runs, quantized, probe: Probe, stage: _Stage) -> dict[tuple[int, LayerSpec], float]:
    """Per (layer, setting): the noise power the setting adds at its own layer's output, after the
    chip's activations, over the reference output's power, on `probe.positions` sampled output
    positions of `pixels` (one view per image), the layer's input the reference's (no tail pass)."""
    net = chain.net
    per_image = max(1, probe.positions // len(pixels))
    err = dict.fromkeys(quantized, 0.0)
    power = [0.0] * len(runs)
    with torch.no_grad():
        for start in range(0, len(pixels), NOISE_BATCH):
            x, pos = net.input(pixels[start : start + NOISE_BATCH]), 0
            for index, specs in enumerate(runs):
                x = net.run(x, pos, chain.positions[index])
                pos = chain.positions[index]
                rng = np.random.default_rng([probe.seed, index, start])
                z = _patches(x, _sample_rows(x.shape, per_image, rng))
                ref = _layer_at(net.layers[pos], z)
                power[index] += float(torch.sum(ref.double() ** 2))
                for spec in specs:
                    err[(index, spec)] += float(torch.sum((_layer_at(chain.chip(index, quantized[(index, spec)]), z) - ref).double() ** 2))
            stage(min(start + NOISE_BATCH, len(pixels)))
    return {key: value / (power[key[0]] or 1.0) for key, value in err.items()}


NOISE_BATCH = 8  # images per prefix pass of `_layer_noise`


def _sample_rows(shape: torch.Size, per_image: int, rng: np.random.Generator) -> np.ndarray:
    """`per_image` distinct output positions of each image (flat (image, y, x) indices), sorted."""
    n, _, h, w = shape
    count = min(per_image, h * w)
    return np.concatenate([i * h * w + np.sort(rng.choice(h * w, size=count, replace=False)) for i in range(n)])


def _patches(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """The 3x3 zero-padded input patches of `x` (N, C, H, W) at the flat positions `rows`, plus a
    constant 1 for the bias: (P, 9C+1), channel-major with the taps (dy, dx) inside, as a weight
    (O, C, 3, 3) flattens."""
    n, c, h, w = x.shape
    img, rest = np.divmod(rows, h * w)
    yy, xx = np.divmod(rest, w)
    padded = F.pad(x, (1, 1, 1, 1))
    img_t = torch.from_numpy(img)
    taps = [padded[img_t, :, torch.from_numpy(yy + dy), torch.from_numpy(xx + dx)] for dy in range(3) for dx in range(3)]
    return torch.cat([torch.stack(taps, dim=2).reshape(len(rows), c * 9), torch.ones(len(rows), 1)], dim=1)


def _layer_at(conv: ChipConv, z: torch.Tensor) -> torch.Tensor:
    """`conv`'s output (after its activations) at the positions whose patches are `z`."""
    weight = torch.cat([conv.weight.reshape(conv.weight.shape[0], -1), conv.bias[:, None]], dim=1)
    y = z @ weight.T
    return F.relu(y) if conv.frac is None else activations(y, conv.frac)


def _result(
    chain: _Layers, shape: tuple[int, ...], tails: _Tails, rows: dict, runs: list[list[LayerSpec]], axes: V2Axes, probe: Probe
) -> Sensitivity:
    """The `Sensitivity` of the per-(layer, setting) `rows`: the m axis as grids, the v2 axes as rows."""
    n_convs = len(chain.convs)

    def grid(name: str) -> list[list[float]]:
        return [[rows[(i, LayerSpec(m))][name] for m in WIDTHS] for i in range(n_convs)]

    v2 = [{str(spec): rows[(i, spec)] for spec in runs[i] if spec.uses_v2} for i in range(n_convs)]
    return Sensitivity(
        layers=[c.name for c in chain.convs],
        images=int(shape[0]),
        views=int(shape[1]),
        ref_cosine=tails.ref_cos / tails.images,
        ref_noise=tails.ref_err / tails.signal,
        cosine=grid("cosine"),
        dist2=grid("dist2"),
        sqnr_db=grid("sqnr_db"),
        noise=grid("noise"),
        seconds=0.0,
        v2_bits=axes.at_bits if any(v2) else 0,
        v2=v2 if any(v2) else [],
        layer_noise=[] if probe.exact else grid("layer_noise"),
        method=probe.name(),
    )


def _descriptors(maps: np.ndarray, images: int, views: int, pool: Pool) -> np.ndarray:
    grouped = maps.reshape(images, views, *maps.shape[1:])
    return np.stack([np.asarray(pool(grouped[i]), np.float64) for i in range(images)])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
