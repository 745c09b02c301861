"""The float reference every comparison is made against: the float stack on uint8 images.

It applies the model's own normalisation, ``(pixels / 255 − mean) / std`` per RGB plane, in
float32, then runs `vgg.stack_to_torch` without gradients (torch's default thread count).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from chipq.errors import ChipqError
from chipq.floatnet.model import FloatConv, FloatStack
from chipq.floatnet.torchnet import stack_to_torch

DEFAULT_BATCH = 8  # images per forward pass: bounds memory at large input sizes


class ImageBatchError(ChipqError):
    """Images that are not a uint8 (N, 3, H, W) batch."""


def normalise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 NCHW RGB images -> float32 ``(x/255 − mean)/std``.

    >>> x = normalise(np.full((1, 3, 1, 1), 255, np.uint8), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    >>> x.ravel().tolist()
    [1.0, 1.0, 1.0]
    """
    scaled = images.astype(np.float32) / np.float32(255.0)
    mean_arr = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std_arr = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return (scaled - mean_arr) / std_arr


class FloatReference:
    """A float model run on raw uint8 images.

    Args:
        stack: the float model; its ``mean``/``std`` give the normalisation.
        batch: images per forward pass.
    """

    def __init__(self, stack: FloatStack, batch: int = DEFAULT_BATCH) -> None:
        self.stack = stack
        self.batch = max(1, int(batch))
        self.net = stack_to_torch(stack)
        convs = [layer.name for layer in stack.layers if isinstance(layer, FloatConv)]
        if not convs:
            raise ValueError("the float stack has no conv layer")  # importers never build one
        self.last_conv = convs[-1]

    def _check(self, images: np.ndarray) -> None:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            is_array = isinstance(images, np.ndarray)
            kind = f"{images.dtype} array of shape {images.shape}" if is_array else type(images).__name__
            raise ImageBatchError(f"images: expected a uint8 (N, 3, H, W) array, got a {kind}")
        if images.shape[0] == 0:
            raise ImageBatchError("images: an empty batch (N = 0)")
        if images.shape[1] != 3:
            raise ImageBatchError(f"images: {images.shape[1]} channels, expected 3 (RGB planes, NCHW)")

    def layer_outputs(self, images: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
        """(name, float32 output) of every layer on `images`, one layer at a time: the values of
        ``run(images, taps=True)`` without every layer's maps held at once (8 photos' maps of
        VGG-16 at 224x224 are 0.5 GB). `images` go through the model as one batch.

        Raises:
            ImageBatchError: not a uint8 NCHW RGB batch.
        """
        self._check(images)
        x = torch.from_numpy(normalise(images, self.stack.mean, self.stack.std))
        with torch.no_grad():
            for name, out in self.net.outputs(x):
                yield name, out.numpy()

    def run(self, images: np.ndarray, taps: bool = False) -> np.ndarray | dict[str, np.ndarray]:
        """Run the float model.

        Args:
            images: uint8 (N, 3, H, W), RGB planes.
            taps: return every layer's output instead of the last conv map.

        Returns:
            float32 (N, C, h, w), the last conv layer's output (after its ReLU; a trailing pool is
            not applied), or with `taps` a dict layer name -> output for every layer, in order.

        Raises:
            ImageBatchError: not a uint8 NCHW RGB batch.
        """
        self._check(images)
        chunks: list[dict[str, np.ndarray]] = []
        with torch.no_grad():
            for start in range(0, images.shape[0], self.batch):
                chunk = images[start : start + self.batch]
                x = torch.from_numpy(normalise(chunk, self.stack.mean, self.stack.std))
                if taps:
                    chunks.append({name: out.numpy() for name, out in self.net.forward_taps(x).items()})
                else:
                    chunks.append({self.last_conv: self.net(x, until=self.last_conv).numpy()})
        joined = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
        return joined if taps else joined[self.last_conv]
