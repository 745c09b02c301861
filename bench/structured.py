"""Structured (whole output channels) against kernel pruning, at the same weight bytes, on real VGG-16 layers.

Chip format v2 can drop single 3x3 kernels (a presence bitmap, SPEC 3.5); the v1 table can already
drop whole output channels (a narrower layer; the next layer loses the matching input channels).
Which removes bytes at less cost? For a pair of consecutive convs A -> B of the real VGG-16:

- **channels**: drop a share s of A's output channels (the least salient: activation energy of the
  channel times the energy of B's weights on it), so A loses s of its kernels and B s of its
  kernels; no bitmap is needed. B is refitted on the remaining inputs.
- **kernels**: drop the least salient kernels of A and of B (saliency ``w^T H_ii w``: the energy the
  kernel adds to its layer's output on the photos), as many *bytes* as the channel route saves:
  at 1-bit masks and 8-bit alpha a kernel is 17 bits and the bitmap costs 1 bit per kernel, so the
  kept share is ``1 - s - 1/17``. A and B are refitted on their kept kernels (A first, then B on
  A's new output).

Both refits solve the same masked least-squares problem (each row's kept weights reproduce the
float layer's pre-activation output on the fit photos; conjugate gradients, the same number of
steps), in float: quantization is left out so that only the structure of the removal differs.
The score is the relative L2 error of B's ReLU output on *other* photos (the disjoint evaluation
photos, `bench/evalset/photos`), against the float model. MACs: the channel route also removes a
share s of A's and B's multiply-accumulates and of A's output map; kernel pruning removes the same
share of MACs only on a chip that skips absent kernels (SPEC 3.5).

Run: ``python bench/structured.py [--model vgg16.pt] [--pairs conv3_2,conv4_2] [--shares 0.25,0.5]``
(writes bench/results/structured.json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common as cm
import numpy as np
import torch
import torch.nn.functional as F

KERNEL_BITS = 9 * 1 + 8  # a 1-bit mask and an 8-bit alpha
FIT_IMAGES = 8
TEST_IMAGES = 8
POSITIONS = 6000  # patch rows sampled per fit for the Hessian
CG_STEPS = 60


def images(folder: Path, count: int, hw: tuple[int, int] = (224, 224)) -> torch.Tensor:
    from chipq.images import list_images, load_image, resize

    paths = list_images(folder)[:count]
    return torch.from_numpy(np.stack([resize(load_image(p), hw).transpose(2, 0, 1) for p in paths]).astype(np.float32))


def float_net(model: Path):
    from chipq.floatnet.torchnet import stack_to_torch
    from chipq.importers import load_model

    stack = load_model(model).without_trailing_pool()
    return stack, stack_to_torch(stack).eval()


def layer_input(net, stack, pixels: torch.Tensor, name: str) -> torch.Tensor:
    """The float input of conv `name` (the previous layer's output), for images given as uint8 RGB."""
    names = [layer.name for layer in stack.layers]
    index = names.index(name)
    mean = torch.tensor(stack.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(stack.std).reshape(1, 3, 1, 1)
    with torch.no_grad():
        taps = net.forward_taps((pixels / 255 - mean) / std)
    return taps[names[index - 1]]


def patches(x: torch.Tensor, rows: int | None, seed: int = 0) -> torch.Tensor:
    """3x3 patches (P, I*9) of x (N, I, H, W), zero padded; `rows` sampled positions (None: all)."""
    cols = F.unfold(x, 3, padding=1)  # (N, I*9, H*W)
    z = cols.permute(0, 2, 1).reshape(-1, cols.shape[1])
    if rows is not None and rows < len(z):
        z = z[torch.from_numpy(np.random.default_rng(seed).choice(len(z), rows, replace=False))]
    return z.double()


def refit(w0: torch.Tensor, keep: torch.Tensor, h: torch.Tensor, target_cross: torch.Tensor) -> torch.Tensor:
    """Rows of W (O, d) with zeros where `keep` (O, d) is False, minimising ||Z W^T - Y||² by CG.

    ``h = Z^T Z``, ``target_cross = Y^T Z`` (O, d); starts from w0 masked; every row at once.
    """
    w = w0 * keep
    r = (target_cross - w @ h) * keep  # minus the gradient / 2
    p = r.clone()
    rs = (r * r).sum(1, keepdim=True)
    for _ in range(CG_STEPS):
        hp = (p @ h) * keep
        step = rs / (p * hp).sum(1, keepdim=True).clamp_min(1e-30)
        w = w + step * p
        r = r - step * hp
        rs_new = (r * r).sum(1, keepdim=True)
        p = r + (rs_new / rs.clamp_min(1e-30)) * p
        rs = rs_new
    return w


def kernel_saliency(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(O, I): ``w_k^T H_kk w_k`` for every kernel k = (o, i): the output energy it adds."""
    out_ch, d = w.shape
    in_ch = d // 9
    blocks = h.reshape(in_ch, 9, in_ch, 9).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (I, 9, 9)
    wk = w.reshape(out_ch, in_ch, 9)
    return torch.einsum("oit,itu,oiu->oi", wk, blocks, wk)


def conv_out(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w.float().reshape(w.shape[0], -1, 3, 3), bias.float(), padding=1)


def measure_pair(net, stack, a_name: str, fit: torch.Tensor, test: torch.Tensor, shares: list[float]) -> list[dict]:
    convs = {c.name: c for c in stack.conv_layers()}
    names = [c.name for c in stack.conv_layers()]
    b_name = names[names.index(a_name) + 1]
    a, b = convs[a_name], convs[b_name]
    wa = torch.from_numpy(a.weight).double().reshape(a.out_channels, -1)
    wb = torch.from_numpy(b.weight).double().reshape(b.out_channels, -1)
    ba, bb = torch.from_numpy(a.bias).double(), torch.from_numpy(b.bias).double()
    xa_fit, xa_test = layer_input(net, stack, fit, a_name), layer_input(net, stack, test, a_name)
    ya_fit = torch.relu(conv_out(xa_fit, wa, ba))
    want_test = torch.relu(conv_out(torch.relu(conv_out(xa_test, wa, ba)), wb, bb))

    za = patches(xa_fit, POSITIONS)
    ha = za.T @ za
    cross_a = wa @ ha  # the float layer is the target: Y = Z W^T
    zb = patches(ya_fit, POSITIONS, seed=1)
    hb = zb.T @ zb

    def score(wa_new, wb_new) -> float:
        got = torch.relu(conv_out(torch.relu(conv_out(xa_test, wa_new, ba)), wb_new, bb))
        return float((got - want_test).norm() / want_test.norm())

    rows = []
    for share in shares:
        # channels: A's output channel c feeds B's input channel c
        energy = (ya_fit.double() ** 2).mean(dim=(0, 2, 3))
        weight_on = (wb.reshape(b.out_channels, a.out_channels, 9) ** 2).sum(dim=(0, 2))
        drop = torch.argsort(energy * weight_on)[: round(share * a.out_channels)]
        keep_a = torch.ones_like(wa, dtype=torch.bool)
        keep_a[drop] = False
        keep_b = torch.ones(b.out_channels, a.out_channels, 9, dtype=torch.bool)
        keep_b[:, drop] = False
        keep_b = keep_b.reshape(b.out_channels, -1)
        t0 = time.perf_counter()
        wb_ch = refit(wb, keep_b, hb, wb @ hb)
        channel_error = score(wa * keep_a, wb_ch)
        channel_seconds = time.perf_counter() - t0

        # kernels, the same bytes: kept share 1 - s - 1/17 of each layer (the bitmap's bit per kernel)
        kept_share = 1 - share - 1 / KERNEL_BITS
        t0 = time.perf_counter()
        ka = _keep_top(kernel_saliency(wa, ha), kept_share)
        wa_k = refit(wa, ka.repeat_interleave(9, dim=1), ha, cross_a)
        ya_new = torch.relu(conv_out(xa_fit, wa_k, ba))
        zb_new = patches(ya_new, POSITIONS, seed=1)
        hb_new = zb_new.T @ zb_new
        cross_b = (zb @ wb.T + 0).T @ zb_new  # float B on float inputs is the target, B's inputs are A's new output
        kb = _keep_top(kernel_saliency(wb, hb_new), kept_share)
        wb_k = refit(wb, kb.repeat_interleave(9, dim=1), hb_new, cross_b)
        kernel_error = score(wa_k, wb_k)
        rows.append(
            {
                "pair": f"{a_name}->{b_name}",
                "share": share,
                "kernels_removed_share": 1 - kept_share,
                "channel_rel_error": channel_error,
                "kernel_rel_error": kernel_error,
                "channel_macs_share_removed": share,
                "seconds": {"channel": channel_seconds, "kernel": time.perf_counter() - t0},
            }
        )
        print(f"{a_name}->{b_name} s={share:.2f}: channels {channel_error:.4f}, kernels {kernel_error:.4f}", file=sys.stderr)
    return rows


def _keep_top(saliency: torch.Tensor, share: float) -> torch.Tensor:
    """The layer-wide top `share` of kernels by saliency (a bool (O, I))."""
    count = round(share * saliency.numel())
    flat = torch.zeros(saliency.numel(), dtype=torch.bool)
    flat[torch.argsort(saliency.reshape(-1), descending=True)[:count]] = True
    return flat.reshape(saliency.shape)


def render(data: dict) -> str:
    rows = [
        [r["pair"], f"{r['share']:.2f}", f"{r['channel_rel_error']:.3f}", f"{r['kernel_rel_error']:.3f}",
         f"{r['channel_rel_error'] / max(r['kernel_rel_error'], 1e-12):.1f}x"]
        for r in data["rows"]
    ]  # fmt: skip
    table = cm.md_table(["layers A->B", "bytes removed", "channels: rel. error", "kernels: rel. error", "channels / kernels"], rows, "lrrrr")
    return "\n".join([
        "## Structured against kernel pruning (`bench/structured.py`)",
        "",
        f"Relative L2 error of B's ReLU output on {data['test_images']} evaluation photos (float, no quantization), "
        f"after removing the same weight bytes from A and B either as whole output channels of A or as single kernels "
        f"of A and B (a 1-bit mask + 8-bit alpha kernel is 17 bits; the bitmap costs 1 bit per kernel); both refitted "
        f"on {data['fit_images']} other photos (`python bench/structured.py`).",
        "",
        table,
        "",
        _verdict(data["rows"]) + " Whole channels remove MACs and activation SRAM on any chip; a pruned kernel "
        "saves cycles only where the engine can skip it (docs/handoff.md, the RTL engine's cycles with pruned kernels).",
        "",
    ])  # fmt: skip


def _verdict(rows: list[dict]) -> str:
    """Which structure costs less error at the same bytes, from the measured rows."""
    ratios = [r["channel_rel_error"] / r["kernel_rel_error"] for r in rows if r["kernel_rel_error"] > 0]
    if not ratios:
        return "No row has a nonzero error to compare."
    low, high = min(ratios), max(ratios)
    if low >= 1:
        return f"At the same bytes whole channels cost {low:.1f}-{high:.1f}x the error of single kernels: the planner prunes kernels (SPEC 3.5)."
    if high <= 1:
        return f"At the same bytes whole channels cost {low:.1f}-{high:.1f}x the error of single kernels: channels are the cheaper cut here."
    return f"At the same bytes the error ratio of whole channels to single kernels spans {low:.1f}-{high:.1f}x: neither wins everywhere."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--pairs", default="conv3_2,conv4_2,conv5_1")
    parser.add_argument("--shares", default="0.25,0.5")
    parser.add_argument("-o", "--out", type=Path, default=cm.RESULTS_DIR / "structured.json")
    args = parser.parse_args(argv)
    cm.set_threads()
    torch.set_grad_enabled(False)
    stack, net = float_net(cm.resolve_model(args.model))
    fit = images(cm.default_photos(), FIT_IMAGES)
    test = images(Path(__file__).parent / "evalset" / "photos", TEST_IMAGES)
    shares = [float(s) for s in args.shares.split(",")]
    rows = [row for pair in args.pairs.split(",") for row in measure_pair(net, stack, pair, fit, test, shares)]
    data = {"fit_images": len(fit), "test_images": len(test), "rows": rows, "machine": cm.machine_info()}
    cm.write_json(args.out, data, command="python bench/structured.py " + " ".join(argv or sys.argv[1:]))
    print(render(data))


if __name__ == "__main__":
    main()
