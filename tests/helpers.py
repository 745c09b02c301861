"""The helpers every test folder shares: repository paths, the CLI run in-process, photos, tiny VGGs.

Import them as ``from helpers import REPO, run_main, write_photos, tiny_vgg``: pytest puts
``tests/`` on ``sys.path`` (it holds the root ``conftest.py``, and no test folder is a package),
so this works from every test folder, as ``floatcraft`` (random float stacks) and
``formats/blobcraft`` (hand-made blobs) do. A script run on its own (``tests/hostile/harness.py``)
puts ``tests/`` on ``sys.path`` itself.

Heavy libraries (torch, Pillow, the CLI) are imported inside the functions, so a test that needs
only `REPO` does not pay for them.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The checkout's root folder (the one holding ``pyproject.toml``)."""

SAMPLES = REPO / "samples"
"""The shipped samples: ``tiny.blob``, ``photos/`` (the retrieval demo's photos), ``queries/``."""

SAMPLE_BLOB = SAMPLES / "tiny.blob"
"""The committed sample blob (regenerate with ``samples/make_sample_blob.py``)."""

SHARED_DATA = REPO.parent / "shared" / "data"
"""Data shared beside the checkout (``../shared/data``: UKBench's ``ukbench56``), when present."""


def made_once(path: Path, make) -> bytes:
    """The bytes at `path`, made by ``make()`` (bytes) by whichever process asks first.

    For a costly fixture that every pytest-xdist worker would otherwise build itself: `path` lies in
    the folder the workers of one run share (`run_folder`), an exclusive lock beside it makes the
    others wait while the first writes, and the file is written whole before anyone reads it.
    """
    import fcntl

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(make())
            partial.replace(path)
        return path.read_bytes()


def run_folder(tmp_path_factory) -> Path:
    """The temporary folder of this test run: shared by its xdist workers, else this session's own
    (never one that outlives the run: the parent of a plain run's is every run's)."""
    import os

    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


TINY_WIDTH_DIVISOR = 16
"""`tiny_vgg`'s channels are torchvision's divided by this: VGG-16 becomes 4..32 channels."""


def run_main(monkeypatch, capsys, *args) -> tuple[int | str | None, str, str]:
    """Run the real ``chipq`` entry point in-process with `args` (paths welcome): (exit code, stdout,
    stderr).

    The exit code is what `SystemExit` carries (``0`` or ``None`` for success), 0 when the entry
    point returns without one.
    """
    from chipq.cli import main

    monkeypatch.setattr(sys, "argv", ["chipq", *map(str, args)])
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def write_photos(folder: Path, count: int = 4, size: tuple[int, int] = (40, 48), seed: int = 0) -> list[Path]:
    """Write `count` smooth random colour JPEGs ``img0.jpg``, ``img1.jpg``, ... into `folder`.

    Each is a 5x6 random colour grid scaled up bilinearly to `size` (height, width), saved at
    quality 95: different enough to rank, smooth enough to survive JPEG. The same `seed` gives the
    same files. `folder` is made if missing.

    Returns:
        The paths written, in index order.
    """
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        path = folder / f"img{index}.jpg"
        Image.fromarray(coarse).resize((size[1], size[0]), Image.BILINEAR).save(path, quality=95)
        paths.append(path)
    return paths


def tiny_vgg(cfg: str = "D", batch_norm: bool = False, classifier: bool = False, seed: int = 0, bn_eps: float = 1e-5):
    """A torchvision-layout VGG with channels / 16, random weights from `seed`, in eval mode.

    ``cfg="D"`` is VGG-16's layout (13 convs, 4..32 channels), ``"A"`` VGG-11's; torchvision's
    ``features.N`` indices are kept, so the importers read it like the real model. The weights are
    torch's default initialisation after ``torch.manual_seed(seed)`` (the global generator is
    seeded, as a test that builds ``VGG(...)`` itself would); with `batch_norm` the BN layers also
    get random affine parameters and running statistics (from a separate generator), so that
    folding them is tested. With `classifier`, a small head (hidden 16, 10 classes, 1x1 pool).
    """
    import torch
    from torch import nn

    from chipq.importers.torchvision_layout import vgg_cfg
    from chipq.importers.torchvision_vgg import VGG

    torch.manual_seed(seed)
    model = VGG(vgg_cfg(cfg, TINY_WIDTH_DIVISOR), batch_norm=batch_norm, classifier=classifier, hidden=16,
                num_classes=10, pool_size=1)  # fmt: skip
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.eps = bn_eps
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model.eval()


def save_tiny_vgg(path: Path, cfg: str = "D", seed: int = 0) -> Path:
    """Save `tiny_vgg(cfg, seed=seed)`'s state dict (a torchvision ``.pt`` file) at `path`; returns `path`."""
    import torch

    torch.save(tiny_vgg(cfg, seed=seed).state_dict(), path)
    return path


def save_script_looping_on_load(path: Path) -> Path:
    """A TorchScript archive whose ``__setstate__`` never returns: ``torch.jit.load`` hangs on it."""
    from typing import Tuple

    import torch
    from torch import nn

    class LoopsOnLoad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(4, 3, 3, 3))
            self.n = 0

        def forward(self, x):
            return torch.conv2d(x, self.w)

        @torch.jit.export
        def __getstate__(self) -> Tuple[torch.Tensor, int, bool]:
            return (self.w, self.n, self.training)

        @torch.jit.export
        def __setstate__(self, state: Tuple[torch.Tensor, int, bool]) -> None:
            self.w = state[0]
            self.n = state[1]
            self.training = state[2]
            while True:
                self.n += 1

    torch.jit.script(LoopsOnLoad()).save(str(path))
    return path
