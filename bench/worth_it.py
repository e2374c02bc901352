"""Is growing worth it? Train small, grow (x2 width + one layer), keep training; compare with baselines.

For each task (an MLP and a CNN on scikit-learn's digits, an MLP on a synthetic teacher task made
in code; nothing is downloaded) and each seed:

  1. train a small model in PyTorch for a budget of steps,
  2. export it to ONNX (torch.onnx.export, dynamo=False), grow it with onnxgrow: every hidden
     group x2 (`widen_model(all="x2", init=zero|noise|net2net)`), then one identity layer after the
     last hidden ReLU (`deepen_model(block="identity")`), import it back with
     `onnxgrow.torch.to_module` and keep training (fresh Adam),
  3. baselines: the same big architecture trained from scratch, and the small model trained on.

Every method gets the same total compute. Compute is counted as training FLOPs: 3 x forward FLOPs
(forward + backward), forward FLOPs = 2 x MACs of the Linear/Conv layers, per example, times the
examples seen; the grown runs include the small model's training. Outputs (to --out, default
bench/results/): worth_it.png (validation loss and accuracy against cumulative FLOPs, mean over
seeds with min-max band), worth_it.md (table), worth_it.json (raw curves).

Run: python bench/worth_it.py [--quick] [--seeds N] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from onnxgrow.deepen import deepen_model
from onnxgrow.torch import to_module
from onnxgrow.widen import widen_model

STRATEGIES = ("zero", "noise", "net2net")
METHODS = ("small (trained on)", "big from scratch", "grown: zero", "grown: noise", "grown: net2net")
COLOURS = {
    "small (trained on)": "tab:gray",
    "big from scratch": "black",
    "grown: zero": "tab:red",
    "grown: noise": "tab:blue",
    "grown: net2net": "tab:green",
}


# -- data -------------------------------------------------------------------------------------------


def digits(image: bool = False):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(1234).permutation(len(x))  # one fixed split for every seed
    tr, va = idx[:1297], idx[1297:]
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return x[tr], y[tr], x[va], y[va]


def synthetic(n_train: int = 8000, n_val: int = 2000, dim: int = 16, classes: int = 5):
    """Labels from a fixed random teacher MLP (16 -> 64 -> 64 -> 5, tanh): nonlinear, learnable."""
    g = torch.Generator().manual_seed(4321)
    x = torch.randn(n_train + n_val, dim, generator=g)
    w1 = torch.randn(dim, 64, generator=g) / dim**0.5 * 2
    w2 = torch.randn(64, 64, generator=g) / 64**0.5 * 2
    w3 = torch.randn(64, classes, generator=g) / 64**0.5
    y = (torch.tanh(torch.tanh(x @ w1) @ w2) @ w3).argmax(1)
    x, y = x.numpy(), y.numpy().astype(np.int64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# -- models ---------------------------------------------------------------------------------------


def mlp(d_in: int, h: int, classes: int, extra: bool = False) -> nn.Sequential:
    layers = [nn.Linear(d_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU()]
    if extra:  # the layer deepen inserts: after the last hidden ReLU
        layers += [nn.Linear(h, h), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(h, classes))


def cnn(c: int, h: int, classes: int, extra: bool = False) -> nn.Sequential:
    layers = [
        nn.Conv2d(1, c, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * c * 16, h),
        nn.ReLU(),
    ]
    if extra:
        layers += [nn.Linear(h, h), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(h, classes))


TASKS = {
    # name: (data, small-model factory, big-model factory (2x width, one more layer))
    "digits-MLP": (digits, lambda: mlp(64, 32, 10), lambda: mlp(64, 64, 10, extra=True)),
    "digits-CNN": (lambda: digits(image=True), lambda: cnn(8, 32, 10), lambda: cnn(16, 64, 10, extra=True)),
    "synthetic-MLP": (synthetic, lambda: mlp(16, 32, 5), lambda: mlp(16, 64, 5, extra=True)),
}


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one example's forward pass through the Linear/Conv layers."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Linear):
            total[0] += mod.in_features * mod.out_features
        else:
            k = mod.weight[0].numel()  # in_channels/groups * kh * kw
            total[0] += k * out[0].numel()

    hs = [m.register_forward_hook(hook) for m in weight_layers(model)]
    with torch.no_grad():
        model(x[:1])
    for h in hs:
        h.remove()
    return total[0]


def train_flops_per_example(model: nn.Module, x: torch.Tensor) -> int:
    return 3 * 2 * forward_macs(model, x)


# -- training ------------------------------------------------------------------------------------


class Run:
    """One method's curve: cumulative FLOPs, validation loss and accuracy at each evaluation."""

    def __init__(self, flops0: float = 0.0, history=None):
        self.flops = float(flops0)
        self.hist = [list(h) for h in history] if history else []  # (flops, val_loss, val_acc)


def evaluate(model, xv, yv):
    model.eval()
    with torch.no_grad():
        out = model(xv)
        loss = nn.functional.cross_entropy(out, yv).item()
        acc = (out.argmax(1) == yv).float().mean().item()
    model.train()
    return loss, acc


def train(model, data, steps, run: Run, fpe: int, *, batch: int, lr: float, evals: int, rng: np.random.Generator):
    xt, yt, xv, yv = data
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    every = max(1, steps // evals)
    if not run.hist:
        run.hist.append([run.flops, *evaluate(model, xv, yv)])
    for step in range(1, steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(xt), batch))
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.flops += fpe * batch
        if step % every == 0 or step == steps:
            run.hist.append([run.flops, *evaluate(model, xv, yv)])
    return run


def to_onnx(model: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    f = io.BytesIO()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x[:2],),
            f,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
        )
    model.train()
    return onnx.load_from_string(f.getvalue())


def grow(model: nn.Module, x: torch.Tensor, init: str, seed: int) -> nn.Module:
    proto = to_onnx(model, x)
    wide = widen_model(proto, all="x2", init=init, seed=seed).model
    last_relu = [n.name for n in wide.graph.node if n.op_type == "Relu"][-1]
    deep = deepen_model(wide, after=last_relu, block="identity").model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = to_module(deep)
    gm.train()
    return gm


def new_units_zero(small: nn.Module, grown: nn.Module, at_growth: dict) -> tuple[int, int]:
    """(new units that never learnt, new units) after training the grown module.

    A new unit of a widened layer "stayed zero" when its incoming weights and bias are still exactly
    0 and its outgoing weights (in the layer that reads it) are exactly what they were at growth (0,
    or the inserted identity layer's 1 on the diagonal). The grown module's Linear/Conv layers are
    the small model's in order plus the inserted one (named .../deepen...); widening appends the new
    units after the old ones (rows j >= old width)."""
    old = weight_layers(small)
    named = [(n, m) for n, m in grown.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    layers = [m for _, m in named]
    kept = [(n, m) for n, m in named if "deepen" not in n]
    assert len(kept) == len(old), ([n for n, _ in named], len(old))
    dead = total = 0
    with torch.no_grad():
        for (_name, g), o in zip(kept, old):
            n_old, n_new = o.weight.shape[0], g.weight.shape[0]
            if n_new == n_old:
                continue
            k = layers.index(g) + 1
            nxt_name, nxt = named[k]
            w0 = at_growth[f"{nxt_name}.weight"]
            per = nxt.weight.shape[1] // n_new  # columns per unit (H*W after Flatten)
            for j in range(n_old, n_new):
                zero = bool((g.weight[j] == 0).all()) and (g.bias is None or bool(g.bias[j] == 0))
                cols = slice(j * per, (j + 1) * per)
                zero &= bool((nxt.weight[:, cols] == w0[:, cols]).all())
                dead += zero
                total += 1
    return dead, total


def one_seed(task: str, seed: int, cfg) -> dict:
    load, make_small, make_big = TASKS[task]
    xt, yt, xv, yv = load()
    data = (torch.from_numpy(xt), torch.from_numpy(yt), torch.from_numpy(xv), torch.from_numpy(yv))
    torch.manual_seed(seed)
    small = make_small()
    torch.manual_seed(seed + 1000)
    big = make_big()
    f_small = train_flops_per_example(small, data[0])
    f_big = train_flops_per_example(big, data[0])
    kw = dict(batch=cfg.batch, lr=cfg.lr, evals=cfg.evals)
    S, T = cfg.small_steps, cfg.grown_steps
    budget = (S * f_small + T * f_big) * cfg.batch  # every method's total training FLOPs
    rng = lambda k: np.random.default_rng(seed * 100 + k)  # noqa: E731

    out = {"f_small": f_small, "f_big": f_big, "grow_at": S * f_small * cfg.batch, "budget": budget}
    pre = train(
        small,
        data,
        S,
        Run(),
        f_small,
        rng=rng(0),
        evals=max(2, cfg.evals * S // (S + T)),
        **{k: v for k, v in kw.items() if k != "evals"},
    )
    snapshot = {k: v.clone() for k, v in small.state_dict().items()}
    curves, dead = {}, {}
    for init in STRATEGIES:
        torch.manual_seed(seed + 2000)
        g = grow(small, data[0], init, seed)
        at_growth = {
            f"{n}.weight": m.weight.detach().clone()
            for n, m in g.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))
        }
        fg = train_flops_per_example(g, data[0])
        assert fg == f_big, (fg, f_big)
        assert sum(p.numel() for p in g.parameters()) == sum(p.numel() for p in big.parameters())
        r = train(g, data, T, Run(pre.flops, pre.hist), fg, rng=rng(1), **kw)
        curves[f"grown: {init}"] = r.hist
        dead[init] = new_units_zero(small, g, at_growth)
    cont = make_small()
    cont.load_state_dict(snapshot)
    t_small = int(round((budget - pre.flops) / (f_small * cfg.batch)))
    curves["small (trained on)"] = train(cont, data, t_small, Run(pre.flops, pre.hist), f_small, rng=rng(1), **kw).hist
    t_big = int(round(budget / (f_big * cfg.batch)))
    curves["big from scratch"] = train(big, data, t_big, Run(), f_big, rng=rng(2), **kw).hist
    out.update(curves=curves, dead=dead)
    return out


# -- summary ----------------------------------------------------------------------------------------


def flops_to_reach(hist, target):
    for f, _, acc in hist:
        if acc >= target:
            return f
    return None


def fmt_flops(v):
    return f"{v / 1e9:.2f}"


def summarise(results: dict, cfg) -> tuple[str, dict]:
    lines = [
        "| task | method | final val acc (%) | GFLOPs to reach scratch's final acc | reached | vs scratch |",
        "|---|---|---|---|---|---|",
    ]
    summary = {}
    for task, seeds in results.items():
        summary[task] = {}
        targets = [float(np.mean([h[2] for h in s["curves"]["big from scratch"][-3:]])) for s in seeds]
        scratch_reach = [flops_to_reach(s["curves"]["big from scratch"], t) for s, t in zip(seeds, targets)]
        for m in METHODS:
            finals = [s["curves"][m][-1][2] * 100 for s in seeds]
            reach = [flops_to_reach(s["curves"][m], t) for s, t in zip(seeds, targets)]
            got = [r for r in reach if r is not None]
            ratio = [r / b for r, b in zip(reach, scratch_reach) if r is not None and b]
            summary[task][m] = {
                "final_acc_mean": float(np.mean(finals)),
                "final_acc_std": float(np.std(finals)),
                "reach_gflops": [None if r is None else r / 1e9 for r in reach],
            }
            reach_s = f"{fmt_flops(np.mean(got))} ± {fmt_flops(np.std(got))}" if got else "—"
            ratio_s = f"{np.mean(ratio):.2f}×" if ratio else "—"
            lines.append(
                f"| {task} | {m} | {np.mean(finals):.1f} ± {np.std(finals):.1f} | {reach_s} | "
                f"{len(got)}/{len(seeds)} | {ratio_s} |"
            )
    budget_lines = []
    for task, seeds in results.items():
        s = seeds[0]
        budget_lines.append(
            f"- {task}: small {s['f_small']:,} / big {s['f_big']:,} training FLOPs per example; "
            f"grown at {fmt_flops(s['grow_at'])} GFLOPs of a {fmt_flops(s['budget'])} GFLOP budget"
        )
    dead_lines = []
    for init in STRATEGIES:
        parts = []
        for task, seeds in results.items():
            d = sum(s["dead"][init][0] for s in seeds)
            t = sum(s["dead"][init][1] for s in seeds)
            summary[task].setdefault("dead_fraction", {})[init] = d / t
            parts.append(f"{task} {d / t:.3f} ({d}/{t})")
        dead_lines.append(f"- `{init}`: " + ", ".join(parts))
    n = len(next(iter(results.values())))
    md = "\n".join(
        [
            f"Mean ± std over {n} seed(s); batch {cfg.batch}, Adam lr {cfg.lr}; every method gets the same total "
            "training-FLOP budget. Target per seed: the big-from-scratch model's final validation accuracy "
            "(mean of its last 3 evaluations). GFLOPs are cumulative training FLOPs (3 × 2 × MACs per example "
            '× examples), including the small model\'s training for the grown runs. "vs scratch": GFLOPs to '
            "reach the target / the from-scratch model's GFLOPs to reach it (< 1 is better), over seeds that reached it.",
            "",
            *lines,
            "",
            "Budgets:",
            *budget_lines,
            "",
            "Fraction of new (widened) units that never learnt: incoming weights and bias still exactly 0 and outgoing "
            "weights exactly as at growth, at the end of training (all seeds together):",
            *dead_lines,
            "",
        ]
    )
    return md, summary


def plot(results: dict, path: Path, cfg) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.2 * len(tasks), 8), squeeze=False)
    for c, task in enumerate(tasks):
        seeds = results[task]
        for m in METHODS:
            h = np.array([s["curves"][m] for s in seeds])  # seeds x points x 3 (same FLOPs per seed)
            f = h[0, :, 0] / 1e9
            for r, (k, name) in enumerate(((1, "validation loss (cross-entropy)"), (2, "validation accuracy (%)"))):
                ax = axes[r, c]
                v = h[:, :, k] * (100 if k == 2 else 1)
                ax.plot(f, v.mean(0), color=COLOURS[m], label=m, lw=1.6)
                if len(seeds) > 1:
                    ax.fill_between(f, v.min(0), v.max(0), color=COLOURS[m], alpha=0.15, lw=0)
                ax.set_ylabel(name)
                ax.set_xlabel("cumulative training compute (GFLOPs)")
        grow_at = seeds[0]["grow_at"] / 1e9
        for r in range(2):
            axes[r, c].axvline(grow_at, color="k", ls=":", lw=1)
            axes[r, c].grid(alpha=0.3)
        axes[0, c].set_title(f"{task}  (dotted line: grown here)")
        axes[0, c].set_yscale("log")
        final = np.mean([s["curves"]["big from scratch"][-1][2] for s in seeds]) * 100
        axes[1, c].set_ylim(max(0, final - 25), 100)
    axes[1, 0].legend(loc="lower right")
    fig.suptitle(
        f"Is growing worth it? x2 width + 1 layer; mean over {len(results[tasks[0]])} seed(s), band = min–max",
        fontsize=13,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets and 1 seed (for the test)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    cfg = ap.parse_args(argv)
    cfg.batch, cfg.lr = 64, 1e-3
    if cfg.quick:
        cfg.small_steps, cfg.grown_steps, cfg.evals = 40, 40, 8
        cfg.seeds = cfg.seeds or 1
    else:
        cfg.small_steps, cfg.grown_steps, cfg.evals = 400, 800, 40
        cfg.seeds = cfg.seeds or 5
    torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = {}
    for task in cfg.tasks:
        results[task] = []
        for seed in range(cfg.seeds):
            results[task].append(one_seed(task, seed, cfg))
            print(f"{task} seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    md, summary = summarise(results, cfg)
    (cfg.out / "worth_it.md").write_text("# Is growing worth it?\n\n![plot](worth_it.png)\n\n" + md)
    (cfg.out / "worth_it.json").write_text(json.dumps({"summary": summary, "results": results}))
    plot(results, cfg.out / "worth_it.png", cfg)
    print(md)
    print(f"wrote {cfg.out / 'worth_it.png'}, {cfg.out / 'worth_it.md'} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
