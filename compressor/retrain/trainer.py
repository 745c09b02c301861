"""Algorithm 1 without labels: distil the float model into its quantized self on the user's images.

What happens (docs/compress.md, "Retraining"):

1. Training samples. ``samples`` square crops are cut from the images (side 35–100 % of the
   image's short side, anywhere), resized to ``crop`` pixels, flipped or not, and turned by 0, 90,
   180 or 270 degrees (the rotations NIP pools over). Sample i comes from image i mod n with a
   generator seeded by (seed, i), so the set depends on the seed and the images only.
2. Cache. The layers before the first trained conv are frozen: their chip output (the integer
   executor on the post-training quantization) is computed once per sample, and so is the float
   model's last conv map (the teacher). A training step then runs only the trained layers.
3. Steps. Each step takes ``batch`` samples (a fresh permutation per epoch, seeded by
   (seed, epoch)), runs the quantized layers (`chipq.retrain.qat.QatNet`: Eq. 1 rebuilt from the shadow
   weights, 8-bit activations, STE), and minimises the distillation loss against the teacher:
   the relative squared error of the last conv map plus ``1 − cos`` of the NIP region descriptors
   (measured on VGG-16: the two together beat either alone). Adam updates the float shadow
   weights and biases.
4. Result. The final shadow weights replace the trained layers of the float stack, and
   `quantize_stack` of that stack, with the same plan and calibrated shifts, is the chip model.

Determinism: every random choice is seeded from ``seed``; torch runs with deterministic algorithms
and ``threads`` intra-op threads (2 by default; a different count may change the float sums and so
the bytes). The state after each step (shadow weights, Adam moments, step count) is all a
checkpoint needs: a run resumed from it ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from chipq.errors import ChipqError
from chipq.executor.fast import FastExecutor
from chipq.executor.memory import CALIB_CHUNK as CACHE_CHUNK  # samples per forward pass while caching
from chipq.executor.memory import release_freed_memory
from chipq.floatnet.model import FloatStack
from chipq.floatnet.reference import FloatReference
from chipq.formats import constants as C
from chipq.formats.fileio import FileRefused, atomic_write, open_regular
from chipq.formats.model import ChipModel
from chipq.images import ImageError, list_images, load_image, resize
from chipq.quant.chipnet import chip_input
from chipq.quant.plan import LayerSpec
from chipq.quant.quantize import LayerReport, as_spec, quantize_stack
from chipq.quant.reconstruct import torch_settings  # noqa: F401 (re-exported: pipeline, tests)
from chipq.retrain.config import RetrainConfig, RetrainConfigError, StepStats  # noqa: F401 (re-exported)
from chipq.retrain.qat import InputFold, QatNet
from chipq.retrieval.pooling_torch import region_descriptors

CHECKPOINT_VERSION = 1
MAX_SOURCE_SIDE = 1024  # training images are shrunk to this long side first: bounded memory
CROP_SHARE = (0.35, 1.0)  # crop side as a share of the image's short side
SAVE_EVERY_SECONDS = 60.0


class EmptyTrainingSet(ChipqError):
    """The --retrain folder holds no image chipq can decode."""


class CheckpointError(ChipqError):
    """A checkpoint file that cannot be read or is not a chipq retraining checkpoint."""


class Interrupted(ChipqError):
    """Retraining stopped at the user's request; the checkpoint holds the last finished step."""

    exit_code = 130


def load_training_images(source: Path) -> list[np.ndarray]:
    """Every decodable image of a folder or list file, long side shrunk to `MAX_SOURCE_SIDE`.

    Raises:
        EmptyTrainingSet: no image could be decoded.
    """
    images = []
    for path in list_images(Path(source)):
        try:
            img = load_image(path)
        except ImageError:
            continue
        scale = MAX_SOURCE_SIDE / max(img.shape[:2])
        if scale < 1:
            img = resize(img, (max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))))
        images.append(img)
    if not images:
        raise EmptyTrainingSet(f"retraining images {source}: no decodable JPEG or PNG image")
    return images


def augment(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One training sample: a random square crop, resized, maybe flipped, turned; (3, S, S) uint8."""
    height, width = img.shape[:2]
    short = min(height, width)
    side = max(1, round(short * rng.uniform(*CROP_SHARE)))
    y = int(rng.integers(0, height - side + 1))
    x = int(rng.integers(0, width - side + 1))
    crop = resize(img[y : y + side, x : x + side], (size, size))
    if rng.integers(0, 2):
        crop = crop[:, ::-1]
    crop = np.rot90(crop, int(rng.integers(0, 4)))
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def training_samples(images: list[np.ndarray], config: RetrainConfig) -> np.ndarray:
    """The cached training inputs (step 1 of the module docstring): uint8 (samples, 3, S, S)."""
    return np.stack([training_sample(images, config, i) for i in range(config.samples)])


def training_sample(images: list[np.ndarray], config: RetrainConfig, i: int) -> np.ndarray:
    """Sample `i` of `training_samples` alone (the cache makes them a chunk at a time)."""
    return augment(images[i % len(images)], config.crop, np.random.default_rng([config.seed, i]))


def samples_sha256(images: list[np.ndarray], config: RetrainConfig) -> str:
    """SHA-256 of `training_samples`' bytes, made one sample at a time (what a checkpoint records)."""
    digest = hashlib.sha256()
    for i in range(config.samples):
        digest.update(training_sample(images, config, i).tobytes())
    return digest.hexdigest()


def first_trained(conv_names: list[str], plan: list[int] | list[LayerSpec], train_from: str) -> int:
    """Index (among the convs) of the first trained layer: by default the first with the plan's
    fewest mask bits, or an earlier one that is pruned (its removed kernels need the training most).

    >>> first_trained(["a", "b", "c"], [3, 1, 1], "")
    1
    >>> first_trained(["a", "b", "c"], [3, 1, 1], "a")
    0
    >>> first_trained(["a", "b", "c", "d"], [LayerSpec(3), LayerSpec(2, 8, 60), LayerSpec(2), LayerSpec(1)], "")
    1
    """
    if not train_from:
        specs = [as_spec(item) for item in plan]
        bits = [spec.bits for spec in specs]
        pruned = [index for index, spec in enumerate(specs) if spec.keep < 100]
        return min([bits.index(min(bits))] + pruned)
    if train_from not in conv_names:
        raise RetrainConfigError(f"--train-from {train_from!r}: no such conv layer ({conv_names[0]}..{conv_names[-1]})")
    return conv_names.index(train_from)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, config: RetrainConfig, center: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and the per-sample descriptor cosines of a batch of last-conv maps.

    `center` (with ``config.desc_center``): the mean teacher descriptor of the cache; the descriptor
    term then compares the descriptors minus it, i.e. only what tells one image from another (the
    plain cosine is dominated by what every image's descriptor shares). The cosines returned are
    the plain ones either way.
    """
    dims = tuple(range(1, teacher.ndim))
    rel_sq = (student - teacher).square().sum(dim=dims) / teacher.square().sum(dim=dims).clamp_min(1e-12)
    d_student, d_teacher = region_descriptors(student), region_descriptors(teacher)
    cosine = (d_student * d_teacher).sum(dim=1)
    matched = cosine
    if center is not None:
        matched = (F.normalize(d_student - center, dim=1) * F.normalize(d_teacher - center, dim=1)).sum(dim=1)
    loss = config.map_weight * rel_sq.mean() + config.desc_weight * (1.0 - matched).mean()
    return loss, cosine.detach()


class Retrainer:
    """The state of one retraining run: frozen prefix, cache, shadow weights, optimizer, step.

    Args:
        stack: the float model (a trailing max-pool is dropped).
        plan: the setting of each conv layer (`LayerSpec` or mask bits).
        fracs: calibrated output fraction bits per conv layer.
        config: the settings.
        input_hw: the chip input size stored in the blob.
        init: the weights training starts from (and the frozen prefix's), e.g. the output of
            `chipq.quant.reconstruct.reconstruct`; None: `stack` itself. The teacher is `stack`.
            A trained pruned layer starts with the kernels `start_plan` keeps
            (`chipq.retrain.pipeline` reconstructs it so), and training prunes it to `plan`'s
            (`RetrainConfig.kept_at`).
    """

    def __init__(
        self,
        stack: FloatStack,
        plan: list[int],
        fracs: list[int],
        config: RetrainConfig,
        input_hw: tuple[int, int] = C.CHIP_INPUT_HW,
        init: FloatStack | None = None,
    ) -> None:
        config.check()
        self.stack = stack.without_trailing_pool()
        start_stack = self.stack if init is None else init.without_trailing_pool()
        self.plan = [as_spec(item) for item in plan]
        self.fracs, self.config, self.input_hw = list(fracs), config, input_hw
        convs = start_stack.conv_layers()
        if [c.name for c in convs] != [c.name for c in self.stack.conv_layers()]:
            raise ValueError("the starting weights have other layers than the model")
        start = first_trained([c.name for c in convs], self.plan, config.train_from)
        self.first = start
        self.split = start_stack.layers.index(convs[start])  # layers[split:] are trained
        # the frozen layers are all this keeps of the starting weights (the trained ones are copied
        # into the QatNet): `float_stack` puts them back in front of the trained ones
        self.frozen = list(start_stack.layers[: self.split])
        ptq, _ = quantize_stack(start_stack, self.plan, self.fracs, input_hw)
        self.prefix = ChipModel(*_model_head(ptq), tuple(ptq.layers[: self.split]))
        in_frac = self.prefix.activation_fracs()[-1] if self.split else 0
        starts = [_kernels(conv, spec) for conv, spec in zip(convs, start_plan(self.plan, start, config))]
        self.net = QatNet(
            start_stack.layers[self.split :],
            self.plan[start:],
            self.fracs[start:],
            in_frac,
            InputFold.of(self.stack) if start == 0 else None,
            start=starts[start:],
            hold_shift=config.holds_shift(self.plan),
        )
        self.start_kept = {name: int(mask.sum()) for name, mask in self.net.present.named_buffers()}
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.step = 0
        self.updating = False
        self.model_hash = stack_hash(self.stack) + ("" if init is None else "+" + stack_hash(start_stack))
        self.data_hash = ""
        self.resume_data_hash = ""  # set by `restore`: the cache must be built from the same samples
        self.inputs: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.center: torch.Tensor | None = None  # the mean teacher descriptor (config.desc_center)

    def build_cache(self, images: list[np.ndarray], hooks: "RetrainHooks | None" = None) -> None:
        """Step 2 of the module docstring: the prefix's chip output and the teacher's map per sample.

        Raises:
            RetrainConfigError: resuming, and the samples differ from the checkpoint's.
            Interrupted: `hooks.stop` asked to stop.
        """
        hooks = hooks or RetrainHooks()
        count = self.config.samples
        if self.resume_data_hash and self.resume_data_hash != samples_sha256(images, self.config):  # before the work
            raise RetrainConfigError("the checkpoint was made from other training images (sample hash differs)")
        release_freed_memory()  # what the reconstruction freed: the cache and the steps start from what is live
        teacher = FloatReference(self.stack, batch=CACHE_CHUNK)
        prefix = FastExecutor(self.prefix, batch=CACHE_CHUNK) if self.split else None
        digest = hashlib.sha256()  # of the samples' pixels in order: the bytes of `training_samples`
        self.inputs = self.targets = None
        for start in range(0, count, CACHE_CHUNK):
            if hooks.stop and hooks.stop():
                raise Interrupted("retraining interrupted while caching the training samples")
            batch = np.stack([training_sample(images, self.config, i) for i in range(start, min(start + CACHE_CHUNK, count))])
            digest.update(batch.tobytes())
            target = teacher.run(batch)
            # uint8 either way (chip activations or pixels): a quarter of the memory of float32
            cached = prefix.run(batch) if prefix else batch
            if self.inputs is None:  # filled in place: no list of chunks joined at the end (twice the memory)
                self.inputs = torch.empty((count, *cached.shape[1:]), dtype=torch.from_numpy(cached).dtype)
                self.targets = torch.empty((count, *target.shape[1:]), dtype=torch.from_numpy(target).dtype)
            self.inputs[start : start + len(batch)] = torch.from_numpy(cached)
            self.targets[start : start + len(batch)] = torch.from_numpy(target)
            if hooks.cache:
                hooks.cache(min(start + CACHE_CHUNK, count), count)
        self.data_hash = digest.hexdigest()
        self.center = None
        if self.config.desc_center:
            with torch.no_grad():
                self.center = torch.cat(
                    [region_descriptors(self.targets[i : i + CACHE_CHUNK]) for i in range(0, len(self.targets), CACHE_CHUNK)]
                ).mean(dim=0)
        del teacher, prefix
        release_freed_memory()

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached samples `rows` as (input of the trained layers in real units, teacher map)."""
        if self.inputs is None or self.targets is None:
            raise RuntimeError("build_cache() first")
        raw = self.inputs[rows]
        if self.split:  # the chip's uint8 activations at the prefix's output fraction bits
            return raw.float() * 2.0**-self.prefix.activation_fracs()[-1], self.targets[rows]
        return chip_input(raw, self.prefix.input_mean), self.targets[rows]  # training starts at conv1: x0 = p − mean

    def batch_indices(self, step: int) -> np.ndarray:
        """The samples of training step `step` (0-based)."""
        per_epoch = self.config.steps_per_epoch()
        epoch, within = divmod(step, per_epoch)
        order = np.random.default_rng([self.config.seed, 1, epoch]).permutation(self.config.samples)
        return order[within * self.config.batch : (within + 1) * self.config.batch]

    def prune(self) -> None:
        """Trained pruning: each pruned layer down to its scheduled count for this step
        (`RetrainConfig.kept_at`; deterministic, so a resumed run prunes as an uninterrupted one)."""
        for name, start in self.start_kept.items():
            self.net.prune_to(name, self.config.kept_at(start, self.net.target(name), self.step))

    def train_step(self) -> StepStats:
        """One optimisation step; the state changes only in `prune` and ``optimizer.step``."""
        self.prune()
        inputs, targets = self.batch(torch.from_numpy(self.batch_indices(self.step)))
        self.optimizer.zero_grad(set_to_none=True)
        loss, cosine = distillation_loss(self.net(inputs), targets, self.config, self.center)
        loss.backward()
        self.updating = True  # a stop in here leaves a half-updated state: not checkpointed
        self.optimizer.step()
        capped = self.net.cap_alphas()  # RetrainConfig.hold_shift: the layer shifts stay the start's
        self.step += 1
        self.updating = False
        return StepStats(self.step, float(loss.detach()), float(cosine.mean()), capped)

    def float_stack(self) -> FloatStack:
        """The float stack with the trained layers' shadow weights in place."""
        layers = self.frozen + self.net.float_layers()
        return FloatStack(layers, self.stack.mean, self.stack.std, self.stack.source)

    def chip_model(self) -> tuple[ChipModel, list[LayerReport]]:
        """The blob's model: exactly `quantize_stack` of the current shadow weights, a trained
        pruned layer with its kept kernels (pruned to the plan's count if training stopped early)."""
        for name in self.start_kept:
            self.net.prune_to(name, self.net.target(name))
        presence = [None] * self.first + [self.net.kept(name) for name in self.net.weights.keys()]
        return quantize_stack(self.float_stack(), self.plan, self.fracs, self.input_hw, presence)

    # --- checkpoints ------------------------------------------------------------------------------

    def state(self) -> dict:
        """Everything a resumed run needs (plain tensors, numbers and strings: weights_only loads it)."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": asdict(self.config),
            "plan": [spec.bits if not spec.uses_v2 else str(spec) for spec in self.plan],
            "fracs": self.fracs,
            "layers": [c.name for c in self.stack.conv_layers()],
            "input_hw": list(self.input_hw),
            "model": self.model_hash,
            "data": self.data_hash,
            "step": self.step,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def restore(self, state: dict, where: str = "checkpoint") -> None:
        """Continue from `state`; refused when it was made with other settings (steps may differ)."""
        mine = self.state()
        theirs_config = dict(state.get("config", {}), steps=self.config.steps)
        for key, mine_value, theirs in (
            ("version", mine["version"], state.get("version")),
            ("settings", mine["config"], theirs_config),
            ("plan", mine["plan"], state.get("plan")),
            ("activation shifts", mine["fracs"], state.get("fracs")),
            ("layers", mine["layers"], state.get("layers")),
            ("chip input size", mine["input_hw"], state.get("input_hw")),
            ("model weights hash", mine["model"], state.get("model")),
        ):
            if mine_value != theirs:
                raise RetrainConfigError(f"{where}: {key} {theirs} differ from this run's {mine_value}")
        try:
            self.net.load_state_dict(state["net"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self.resume_data_hash = str(state["data"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{where}: not a usable retraining state ({exc})") from exc
        if self.step > self.config.steps:
            raise RetrainConfigError(f"{where}: already at step {self.step}, beyond the {self.config.steps} asked for")


def start_plan(plan: list[LayerSpec], first: int, config: RetrainConfig) -> list[LayerSpec]:
    """The settings training starts from: a pruned layer from `first` on keeps ``config.prune_from``
    percentage points more (at most 100 %), the other layers as in `plan`.

    >>> [str(s) for s in start_plan([LayerSpec(1, 8, 40), LayerSpec(1, 8, 40)], 1, RetrainConfig(prune_from=20))]
    ['1k40', '1k60']
    """
    return [
        LayerSpec(spec.bits, spec.alpha_bits, min(100, spec.keep + config.prune_from)) if index >= first and spec.keep < 100 else spec
        for index, spec in enumerate(plan)
    ]


def _kernels(conv, spec: LayerSpec) -> int:
    """Kernels `spec` keeps of `conv`."""
    return spec.kept(conv.weight.shape[0] * conv.weight.shape[1])


def stack_hash(stack: FloatStack) -> str:
    """SHA-256 over every conv's name, weights and bias (a checkpoint belongs to one model)."""
    return stack.weights_sha256()


def _model_head(model: ChipModel) -> tuple:
    return (model.input_height, model.input_width, model.channel_order, model.input_mean)


def save_checkpoint(path: Path, trainer: Retrainer) -> None:
    """Write the trainer's state atomically (temp file in the same folder, then rename).

    Raises:
        CheckpointError: the file system refused the write; `path` is left as it was.
    """
    path = Path(path)
    state = trainer.state()
    try:
        atomic_write(path, lambda handle: torch.save(state, handle), what="checkpoint")
    except FileRefused as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True`` (no code runs while loading)."""
    try:
        with open_regular(path, "checkpoint") as handle:
            state = torch.load(handle, map_location="cpu", weights_only=True)
    except FileRefused as exc:
        raise CheckpointError(str(exc)) from None
    except Exception as exc:  # torch raises many types for a bad file; all mean "unusable"
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a chipq retraining checkpoint (version {CHECKPOINT_VERSION})")
    return state


@dataclass
class RetrainHooks:
    """What the caller sees of a run (all optional): progress and a polite stop request.

    Attributes:
        stage: called with a short text as each stage before training starts (the reconstruction's
            layers).
        cache: called with (done, total) while the training samples are cached.
        step: called with each step's `StepStats`.
        stop: polled between cache chunks and after every step; True ends the run with a
            checkpoint and `Interrupted` (the CLI sets it on Ctrl-C).
    """

    cache: Callable[[int, int], None] | None = None
    step: Callable[[StepStats], None] | None = None
    stage: Callable[[str], None] | None = None
    stop: Callable[[], bool] | None = None


def run_training(
    trainer: Retrainer, checkpoint: Path | None, hooks: RetrainHooks, save_every: float = SAVE_EVERY_SECONDS
) -> None:
    """Train until ``config.steps``, saving the state to `checkpoint` on the way and on the way out.

    The state is saved every `save_every` seconds, when `hooks.stop` asks, and when anything (a
    KeyboardInterrupt, a crash) escapes a step outside the optimizer update, so the checkpoint
    always holds the state after a finished step.

    Raises:
        Interrupted: `hooks.stop` returned True.
    """
    last_save = time.monotonic()
    try:
        while trainer.step < trainer.config.steps:
            stats = trainer.train_step()
            # a step's maps and fits are freed: give their pages back, so that the heap's holes do not
            # add up over the steps (the heavy commands' allocator keeps freed memory, `release_freed_memory`)
            release_freed_memory()
            if hooks.step:
                hooks.step(stats)
            if hooks.stop and hooks.stop():
                _save(checkpoint, trainer)
                where = f"; checkpoint {checkpoint}, continue with --resume" if checkpoint else ""
                raise Interrupted(f"retraining interrupted after step {trainer.step}{where}")
            if checkpoint and time.monotonic() - last_save >= save_every:
                _save(checkpoint, trainer)
                last_save = time.monotonic()
    except Interrupted:
        raise
    except BaseException:
        if not trainer.updating:
            _save(checkpoint, trainer)
        raise


def _save(checkpoint: Path | None, trainer: Retrainer) -> None:
    if checkpoint is not None and trainer.step > 0:
        save_checkpoint(checkpoint, trainer)
