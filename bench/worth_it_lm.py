"""Is growing worth it? A byte-level language model, grown with onnxgrow, against the big model from scratch.

The question: does a small model that was already trained, grown with onnxgrow into the big architecture and
trained on, reach the big model's quality for less training compute than the big model trained from scratch?

- Data: the Python standard library's own source (the running interpreter's `.py` files, tests left out),
  byte level (vocabulary 256). A file goes to validation when the sha256 of its path inside the library is
  0 modulo 20 (about 5 %). The corpus size and its sha256 are printed so runs can be compared. Metric:
  validation bits per byte on a fixed set of windows (evenly spaced in the validation text, every position
  of each window predicted).
- Models (bench/lm_gpt.py): a pre-norm GPT. Small d 32 × 1 layer (2 heads), big d 64 × 2 layers (4 heads):
  width × 2 and depth × 2; each at the peak learning rate short pilots found best for it (see CONFIGS).
  At this budget the small model is capacity-limited (checked in the run: a warning says when it is not,
  since growth then has nothing to win).
- Growth goes through onnxgrow: the trained small model is exported (`torch.onnx.export`), widened
  (`widen_model(hidden="x2", heads="x2", ffn="x2")`: hidden units copied whole (net2net, what LayerNorm
  allows), new heads and feed-forward units with small random incoming and zero outgoing weights), deepened
  (`deepen_model("layers", block="copy")`: each layer copied, the copy's projections into the residual
  stream zeroed), loaded into the big module (`onnxgrow.torch.state_dict_for`), checked to compute what the
  small model computed, then trained on.
- Fair budgets: every run gets the same training FLOPs (a grown run's small phase included). Training FLOPs
  per token = 3 × forward, forward = 2 × the weights of every matrix product (the blocks' Linear layers and
  the output head) + 4 × layers × context × d (q·kᵀ and attention·v); see `GPT.train_flops_per_token`.
  Every schedule is linear warmup then cosine to its floor (10 % of the peak) exactly at its own last step:
  the small phase of a grown run is a complete run (the model "already trained"), the grown phase re-warms
  briefly and decays to the floor at the budget; the baselines decay at the budget.
- Variants: each growth point is grown in both depth orders (`deepen(..., order="interleave")`: L0 L0' L1 L1';
  `order="stack"`: L0 L1 L0' L1') where they differ (with one small layer both give L0 L0', so one runs), and
  each grown model trains on with a fresh AdamW and, at the growth points in `Config.carry`, also with the small
  run's AdamW state carried over by `onnxgrow.torch.grow_optimizer_state` (old units keep their moments, copies
  and new units start fresh).
- Seeds ≥ 3: mean ± std; a difference no larger than the two spreads together (|Δ| ≤ std_a + std_b) is
  reported as no difference.

Outputs (--out, default bench/results/): worth_it_lm.png (validation bits/byte against training FLOPs, one
panel per growth point), worth_it_lm.md (table and verdict), worth_it_lm.json (every curve and schedule).
`--readme README.md` also writes the table and verdict into the README between its worth-it markers.

Configurations (`CONFIGS`): "cpu" (default; `make worth-it`; 3 seeds, 16 runs of a few minutes spread over
one single-threaded process per core, the most expensive first: 13 minutes on 2 quiet cores, see the README
for the committed run's time), "quick" (`--quick`: tiny sizes, seconds; the test suite runs it), "cuda"
(`--device cuda`: a larger model and budget on one GPU, one process; one clear line and exit status 2 when
CUDA is not available).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import math
import os
import sys
import sysconfig
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_gpt import GPT  # noqa: E402

import onnxgrow.torch as ogt  # noqa: E402
from onnxgrow.deepen import deepen_model  # noqa: E402
from onnxgrow.widen import widen_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
README_BEGIN, README_END = "<!-- worth-it-lm:begin -->", "<!-- worth-it-lm:end -->"


@dataclass(frozen=True)
class Config:
    """One experiment: model sizes (d, layers, heads), batches, the FLOP budget every run gets, seeds."""

    name: str
    small: tuple[int, int, int]
    big: tuple[int, int, int]
    ctx: int
    batch: int
    budget: float  # training FLOPs of every run
    growth: tuple[float, ...]  # growth points, as fractions of the budget
    seeds: int
    carry: tuple[float, ...] | None = None  # growth points that also train on with the AdamW state carried (None: all)
    lr_small: float = 3e-3  # AdamW peak learning rate of the small model (and of the small phase)
    lr_big: float = 3e-3  # of the big model (and of the grown phase)
    floor: float = 0.1  # every schedule ends at floor × lr
    warmup: float = 0.05  # warmup, as a fraction of a run's (or a small phase's) steps
    rewarm: float = 0.02  # warmup after growth, as a fraction of the grown phase's steps
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    clip: float = 1.0
    evals: int = 32  # evaluations over the budget (a run is also evaluated at its start and end)
    val_windows: int = 192
    val_percent: int = 5


CONFIGS = {
    # 2 CPU cores (`make worth-it`). Pilots (1 seed, 1 thread, context 64, batch 64; bits/byte at the end of a
    # run whose schedule ends there): at 2e12 FLOPs the big model's peak lr 3e-3 / 6e-3 / 9e-3 / 1.2e-2 gave
    # 2.497 / 2.358 / 2.216 / 2.556 and the small model's 1.2e-2 / 2e-2 / 3e-2 / 5e-2 gave 2.224 / 2.134 /
    # 2.126 / 2.155; at 4e12, big (lr 6e-3) 1.907, small (lr 1.2e-2) 2.092. At 4e12 with context 128, batch 32
    # and lr 3e-3 for both the two models tied (2.211 / 2.220): growth would have had nothing to win. The big
    # model sees 5.1 M tokens (0.45 epoch), the small one 27 M (2.4 epochs). To fit 3 seeds in 30 minutes on 2
    # cores: 3.2e12 FLOPs (pilot, 1 seed: big 1.988, small 2.100; a 2-seed run at 4e12 gave big 1.892 ± 0.005,
    # small 2.097 ± 0.002) and the carried AdamW state at the first growth point only (at 4e12 it made no
    # difference at either point). The big model sees 4.1 M tokens, the small one 21.7 M.
    "cpu": Config(
        "cpu",
        small=(32, 1, 2),
        big=(64, 2, 4),
        ctx=64,
        batch=64,
        budget=3.2e12,
        growth=(0.1, 0.25),
        seeds=3,
        carry=(0.1,),
        lr_small=3e-2,
        lr_big=9e-3,
        val_windows=384,
    ),
    "quick": Config(
        "quick",
        small=(16, 1, 2),
        big=(32, 2, 4),
        ctx=32,
        batch=8,
        budget=2.5e9,
        growth=(0.1, 0.25),
        seeds=2,
        lr_small=6e-3,
        lr_big=3e-3,
        warmup=0.1,
        rewarm=0.1,
        evals=6,
        val_windows=16,
    ),
    # one GPU (not run here: no GPU in this project's machines; learning rates not tuned): width × 2 and
    # depth × 2 from 2 layers, so stacked and interleaved copies differ; the big model sees 27 M tokens
    # (2.3 epochs), the small one 180 M (15 epochs)
    "cuda": Config(
        "cuda",
        small=(128, 2, 4),
        big=(256, 4, 8),
        ctx=256,
        batch=64,
        budget=6e14,
        growth=(0.1, 0.25),
        seeds=5,
        lr_small=4e-3,
        lr_big=2e-3,
        evals=40,
        val_windows=512,
    ),
}


# -- data ----------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    train: torch.Tensor  # uint8 bytes
    val: torch.Tensor
    files: tuple[int, int]  # (train files, validation files)
    sha256: str
    root: str


def corpus(val_percent: int) -> Corpus:
    """The running interpreter's standard library `.py` files, test packages and test_*.py left out;
    a file is a validation file when sha256(its path in the library) is 0 modulo 100 / val_percent."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    paths = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*.py")
        if not skip & set(p.relative_to(root).parts[:-1]) and not p.name.startswith("test_")
    )
    if not paths:
        raise SystemExit(f"worth_it_lm: no .py files under {root} (the standard library's source is needed)")
    train, val, digest = [], [], hashlib.sha256()
    for rel, p in paths:
        data = p.read_bytes()
        digest.update(rel.encode() + b"\0" + data)
        is_val = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:4], "big") % (100 // val_percent) == 0
        (val if is_val else train).append(data)
    as_tensor = lambda parts: torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8)  # noqa: E731
    return Corpus(as_tensor(train), as_tensor(val), (len(train), len(val)), digest.hexdigest(), str(root))


class Batches:
    """Batch k of a seed's stream: `batch` random windows of the training text (the same for every run of a
    seed, so runs differ in their models and schedules, not in the data they see)."""

    def __init__(self, data: torch.Tensor, ctx: int, batch: int, seed: int, device: str) -> None:
        self.data, self.ctx, self.batch, self.seed = data.to(device), ctx, batch, seed
        self.offsets = torch.arange(ctx + 1, device=device)

    def __call__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = np.random.default_rng([self.seed, k]).integers(0, len(self.data) - self.ctx - 1, self.batch)
        chunk = self.data[torch.from_numpy(starts).to(self.data.device)[:, None] + self.offsets].long()
        return chunk[:, :-1], chunk[:, 1:]


def val_windows(val: torch.Tensor, ctx: int, n: int, device: str) -> torch.Tensor:
    starts = np.linspace(0, len(val) - ctx - 1, n).astype(np.int64)
    return torch.stack([val[s : s + ctx + 1] for s in starts]).long().to(device)


@torch.no_grad()
def bits_per_byte(model: torch.nn.Module, windows: torch.Tensor, chunk: int = 64) -> float:
    was = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(windows), chunk):
        w = windows[i : i + chunk]
        logits = model(w[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum").item()
    model.train(was)
    return total / (windows[:, 1:].numel() * math.log(2))


# -- schedules and training ----------------------------------------------------------------------------


def lr_at(step: int, steps: int, warmup: int, peak: float, floor: float) -> float:
    """Learning rate of step 1..steps: linear warmup to `peak` over `warmup` steps, then cosine down to
    `floor`, which the last step (step == steps) reaches exactly."""
    if step <= warmup:
        return peak * step / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class Curve:
    """One run: validation bits/byte at cumulative training FLOPs, and the schedule of each phase."""

    points: list[list[float]] = field(default_factory=list)  # [flops, bits/byte, lr]
    phases: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return self.phases[-1]["flops_end"] if self.phases else 0.0


def arch(spec: tuple[int, int, int], cfg: Config) -> dict:
    d, layers, heads = spec
    return {"d": d, "layers": layers, "heads": heads, "ctx": cfg.ctx}


def make(spec: tuple[int, int, int], cfg: Config, seed: int, device: str) -> GPT:
    torch.manual_seed(seed)
    return GPT(**arch(spec, cfg)).to(device)


def adamw(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr_big, betas=cfg.betas, weight_decay=cfg.weight_decay)


class Trainer:
    """Trains models of one seed for phases of given steps and evaluates on the FLOP grid."""

    def __init__(self, cfg: Config, batches: Batches, windows: torch.Tensor) -> None:
        self.cfg, self.batches, self.windows = cfg, batches, windows
        self.grid = cfg.budget / cfg.evals
        self.timing: dict[str, list[float]] = {}  # arch name -> [seconds, tokens]

    def phase(
        self,
        name: str,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        steps: int,
        fpt: int,
        warmup: int,
        curve: Curve,
        first_batch: int,
    ) -> None:
        """`steps` steps of `model` (training FLOPs per token `fpt`) with a schedule of its own."""
        cfg = self.cfg
        per_step = fpt * cfg.batch * cfg.ctx
        peak = cfg.lr_small if name == "small" else cfg.lr_big
        flops = curve.flops
        if not curve.points:
            curve.points.append([flops, bits_per_byte(model, self.windows), 0.0])
        next_eval = (math.floor(flops / self.grid + 1e-9) + 1) * self.grid
        lr = 0.0
        model.train()
        t0 = time.perf_counter()
        for step in range(1, steps + 1):
            lr = lr_at(step, steps, warmup, peak, cfg.floor * peak)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = self.batches(first_batch + step - 1)
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            flops += per_step
            if flops >= next_eval - 1e-6 * self.grid or step == steps:
                spent = time.perf_counter() - t0
                curve.points.append([flops, bits_per_byte(model, self.windows), lr])
                t0 = time.perf_counter() - spent  # evaluation time is not training time
                while next_eval <= flops + 1e-6 * self.grid:
                    next_eval += self.grid
        sec = time.perf_counter() - t0
        slot = self.timing.setdefault(name, [0.0, 0.0])
        slot[0] += sec
        slot[1] += steps * cfg.batch * cfg.ctx
        curve.phases.append(
            {
                "model": name,
                "steps": steps,
                "flops_per_token": fpt,
                "flops_per_step": per_step,
                "warmup": warmup,
                "first_batch": first_batch,
                "flops_start": curve.flops,
                "flops_end": flops,
                "lr_last": lr,
                "lr_floor": cfg.floor * peak,
                "lr_peak": peak,
            }
        )


def steps_for(flops: float, per_step: int) -> int:
    return max(1, int(round(flops / per_step)))


# -- growth through onnxgrow ---------------------------------------------------------------------------


def export(model: GPT, cfg: Config) -> onnx.ModelProto:
    """The small model as ONNX (TorchScript exporter, attention written out, batch and sequence dynamic:
    with a fixed sequence the exporter folds the position lookup into a constant)."""
    cpu = copy.deepcopy(model).cpu().eval()
    ids = torch.zeros(2, cfg.ctx, dtype=torch.long)
    f = io.BytesIO()
    with cpu.exporting(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            cpu,
            (ids,),
            f,
            dynamo=False,
            input_names=["ids"],
            output_names=["logits"],
            opset_version=17,
            dynamic_axes={"ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
        )
    return onnx.load_from_string(f.getvalue())


def grown_onnx(small: GPT, cfg: Config, seed: int, order: str) -> onnx.ModelProto:
    """Export, widen (hidden, heads, feed-forward by the big/small ratios) and deepen (copy every layer,
    copies in `order`: "interleave" or "stack")."""
    (d0, l0, h0), (d1, l1, h1) = cfg.small, cfg.big
    parts = {}
    for part, old, new in (("hidden", d0, d1), ("heads", h0, h1), ("ffn", 4 * d0, 4 * d1)):
        if new != old:
            parts[part] = f"x{new // old}"
    model = export(small, cfg)
    if parts:
        model = widen_model(model, seed=seed, **parts).model  # verified by onnxruntime (raises if not exact)
    if l1 > l0:
        model = deepen_model(model, "layers", block="copy", count=l1 // l0 - 1, seed=seed, order=order).model
    return model


def load_grown(model: onnx.ModelProto, small: GPT, cfg: Config, device: str) -> GPT:
    """The grown model's weights in a big GPT (`onnxgrow.torch.state_dict_for`: copied layers carry their new
    layer numbers; `base=small` supplies what the export folded and growth did not change)."""
    big = GPT(**arch(cfg.big, cfg))
    big.load_state_dict(ogt.state_dict_for(big, model, base=copy.deepcopy(small).cpu()), strict=True)
    return big.to(device)


def check_same(small: torch.nn.Module, grown: torch.nn.Module, windows: torch.Tensor) -> float:
    """Normalised largest difference of the logits (CPU, float32): growth must not change the function."""
    a, b = copy.deepcopy(small).cpu().eval(), copy.deepcopy(grown).cpu().eval()
    ids = windows[:8, :-1].cpu()
    with torch.no_grad():
        x, y = a(ids), b(ids)
    err = float((x - y).abs().max() / x.abs().max().clamp_min(1e-12))
    if not err < 1e-4:
        raise SystemExit(
            f"worth_it_lm: the grown module does not compute what the small model did (normalised error {err:.2e})"
        )
    return err


# -- one seed ------------------------------------------------------------------------------------------

BIG, SMALL = "big from scratch", "small from scratch"


def depth_orders(cfg: Config) -> list[str]:
    """Both depth orders where they differ (two or more small layers), else the one ("interleave")."""
    return ["interleave", "stack"] if cfg.small[1] >= 2 and cfg.big[1] > cfg.small[1] else ["interleave"]


def same_weights(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    """Whether two models hold the same weights, compared as sorted multisets of arrays."""
    key = lambda m: sorted(
        (tuple(t.dims), numpy_helper.to_array(t).tobytes())  # noqa: E731
        for t in m.graph.initializer
    )
    return key(a) == key(b)


def grown_name(g: float, order: str | None, carry: bool) -> str:
    how = ", stacked" if order == "stack" else ", interleaved" if order == "interleave" else ""
    return f"grown at {g:.0%}{how} ({'AdamW state carried' if carry else 'fresh AdamW'})"


def carried(cfg: Config, g: float) -> bool:
    """Whether growth point `g` also trains on with the small run's AdamW state carried over."""
    return cfg.carry is None or any(abs(g - c) < 1e-9 for c in cfg.carry)


@dataclass(frozen=True)
class Job:
    """One unit of work of a seed: the big or the small model from scratch, or every run grown at `g`."""

    seed: int
    kind: str  # "big", "small" or "grown"
    g: float = 0.0


def jobs_for(cfg: Config, seeds: int, which: tuple[str, ...]) -> list[Job]:
    out = []
    for seed in range(seeds):
        out += [Job(seed, k) for k in ("big", "small") if k in which]
        out += [Job(seed, "grown", g) for g in cfg.growth] if "grown" in which else []
    return out


def run_job(cfg: Config, job: Job, data: Corpus, device: str, log) -> dict:
    """Train what `job` names; its runs (name → curve), training time per architecture, how grown weights were
    loaded, and the check that both depth orders agree where they must."""
    seed = job.seed
    batches = Batches(data.train, cfg.ctx, cfg.batch, seed, device)
    windows = val_windows(data.val, cfg.ctx, cfg.val_windows, device)
    tr = Trainer(cfg, batches, windows)
    fs = GPT(**arch(cfg.small, cfg)).train_flops_per_token()
    fb = GPT(**arch(cfg.big, cfg)).train_flops_per_token()
    step_s, step_b = fs * cfg.batch * cfg.ctx, fb * cfg.batch * cfg.ctx
    runs: dict[str, dict] = {}
    loaded: set[str] = set()
    same_orders: list[str] = []
    t0 = time.perf_counter()

    def done(name: str, curve: Curve) -> None:
        nonlocal t0
        runs[name] = asdict(curve)
        log(
            f"  seed {seed} {name}: {curve.points[-1][1]:.3f} bits/byte at {curve.flops:.3g} FLOPs "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        t0 = time.perf_counter()

    if job.kind in ("big", "small"):
        spec, fpt, init = (cfg.big, fb, 1000 + seed) if job.kind == "big" else (cfg.small, fs, seed)
        model = make(spec, cfg, init, device)
        c = Curve()
        n = steps_for(cfg.budget, fpt * cfg.batch * cfg.ctx)
        tr.phase(job.kind, model, adamw(model, cfg), n, fpt, max(1, round(cfg.warmup * n)), c, 0)
        done(BIG if job.kind == "big" else SMALL, c)
        return {"runs": runs, "timing": tr.timing, "loaded": [], "orders": []}

    g = job.g
    small = make(cfg.small, cfg, seed, device)
    opt = adamw(small, cfg)
    base = Curve()
    ns = steps_for(g * cfg.budget, step_s)
    tr.phase("small", small, opt, ns, fs, max(1, round(cfg.warmup * ns)), base, 0)
    ng = steps_for(cfg.budget - base.flops, step_b)
    for order in depth_orders(cfg):
        model = grown_onnx(small, cfg, seed, order)
        if len(depth_orders(cfg)) == 1 and cfg.big[1] > cfg.small[1] and g == cfg.growth[0]:
            # one small layer: the stacked order must give the interleaved model (checked once per seed, at the
            # first growth point)
            other = grown_onnx(small, cfg, seed, "stack")
            if not same_weights(model, other):
                raise SystemExit("worth_it_lm: with one small layer the stacked and interleaved copies differ")
            same_orders.append(
                f"seed {seed}: stacked and interleaved copies of the one small layer are the "
                f"same model (every weight equal)"
            )
        for carry in (False, True) if carried(cfg, g) else (False,):
            s = copy.deepcopy(small)
            o = adamw(s, cfg)
            o.load_state_dict(opt.state_dict())
            grown = load_grown(model, s, cfg, device)
            err = check_same(s, grown, windows)
            o2 = ogt.grow_optimizer_state(o, s, grown, model) if carry else adamw(grown, cfg)
            c = Curve(
                points=copy.deepcopy(base.points),
                phases=copy.deepcopy(base.phases),
                notes=[
                    f"deepen order {order}; loaded with state_dict_for(base=small); logits match the "
                    f"small model's to {err:.1e} (normalised)"
                ],
            )
            loaded.add("state_dict_for(base=small)")
            tr.phase("grown", grown, o2, ng, fb, max(1, round(cfg.rewarm * ng)), c, ns)
            done(grown_name(g, order if len(depth_orders(cfg)) > 1 else None, carry), c)
    return {"runs": runs, "timing": tr.timing, "loaded": sorted(loaded), "orders": same_orders}


def merge(parts: list[dict]) -> dict:
    """A seed's results from its jobs' (in job order: big, small, then each growth point)."""
    out: dict = {"runs": {}, "timing": {}, "loaded": set(), "orders": []}
    for part in parts:
        out["runs"].update(part["runs"])
        for k, (sec, tok) in part["timing"].items():
            slot = out["timing"].setdefault(k, [0.0, 0.0])
            slot[0], slot[1] = slot[0] + sec, slot[1] + tok
        out["loaded"] |= set(part["loaded"])
        out["orders"] += part["orders"]
    out["loaded"] = sorted(out["loaded"])
    return out


_WORKER: dict = {}


def _worker_init(threads: int, val_percent: int) -> None:
    """A worker process: its torch threads and its own copy of the corpus (read once)."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", module="onnx2torch")
    _WORKER["data"] = corpus(val_percent)


def _worker_run(cfg: Config, job: Job, device: str) -> dict:
    return run_job(cfg, job, _WORKER["data"], device, lambda s: print(s, flush=True))


def run_jobs(
    cfg: Config,
    jobs: list[Job],
    cost: dict[str, float],
    data: Corpus,
    device: str,
    workers: int,
    threads: int,
    log,
    on_seed,
) -> list[dict]:
    """Every job, the most expensive first, over `workers` processes (one: in this process); a seed's merged
    results go to `on_seed` as soon as all its jobs are done. Returns the seeds' results in seed order."""
    order = sorted(jobs, key=lambda j: -cost[j.kind if j.kind != "grown" else f"grown {j.g}"])
    parts: dict[Job, dict] = {}
    seeds: dict[int, dict] = {}

    def finished(job: Job, part: dict) -> None:
        parts[job] = part
        mine = [j for j in jobs if j.seed == job.seed]
        if all(j in parts for j in mine):
            seeds[job.seed] = merge([parts[j] for j in mine])
            on_seed([seeds[s] for s in sorted(seeds)])

    if workers <= 1:
        for job in order:
            finished(job, run_job(cfg, job, data, device, log))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(threads, cfg.val_percent),
        ) as pool:
            futures = {pool.submit(_worker_run, cfg, job, device): job for job in order}
            for fut in as_completed(futures):
                finished(futures[fut], fut.result())
    return [seeds[s] for s in sorted(seeds)]


# -- summary -------------------------------------------------------------------------------------------


def reach(points: list[list[float]], target: float) -> float | None:
    """Training FLOPs at which a curve first gets to `target` bits/byte (linear between evaluations)."""
    for (f0, v0, _), (f1, v1, _) in zip(points, points[1:]):
        if v1 <= target:
            return f1 if v0 <= v1 else f0 + (f1 - f0) * (v0 - target) / (v0 - v1)
    return None


def pm(values: list[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def compare(a: list[float], b: list[float]) -> str:
    """a against b: better (lower), worse, or no difference when |Δ mean| ≤ std(a) + std(b)."""
    delta = float(np.mean(a) - np.mean(b))
    if abs(delta) <= np.std(a) + np.std(b):
        return f"{delta:+.3f} (no difference)"
    return f"{delta:+.3f} ({'better' if delta < 0 else 'worse'})"


def summarise(cfg: Config, seeds: list[dict]) -> dict:
    """Final bits/byte per method, FLOPs to reach the big model's final loss, the capacity check."""
    methods = list(seeds[0]["runs"])
    final = {m: [s["runs"][m]["points"][-1][1] for s in seeds] for m in methods}
    targets = final[BIG]
    rows = {}
    for m in methods:
        got = [reach(s["runs"][m]["points"], t) for s, t in zip(seeds, targets)]
        frac = [r / cfg.budget for r in got if r is not None]
        rows[m] = {
            "final": final[m],
            "reach_fraction": [None if r is None else r / cfg.budget for r in got],
            "reached": len(frac),
            "vs_big": None if m == BIG else compare(final[m], final[BIG]),
        }
    gap = float(np.mean(final[SMALL]) - np.mean(final[BIG]))
    spread = float(np.hypot(np.std(final[SMALL]), np.std(final[BIG])))
    capacity = {"gap": gap, "spread": spread, "passed": bool(gap > 0 and gap > 3 * spread)}
    return {"rows": rows, "capacity": capacity}


def verdict(cfg: Config, summary: dict) -> list[str]:
    """Plain-words conclusions that follow the numbers."""
    rows, cap = summary["rows"], summary["capacity"]
    n = len(rows[BIG]["final"])
    out = []
    if cap["passed"]:
        out.append(
            f"Capacity check passed: the small model trained for the whole budget ends at "
            f"{pm(rows[SMALL]['final'])} bits/byte, the big one at {pm(rows[BIG]['final'])}: "
            f"{cap['gap']:.3f} worse, {cap['gap'] / max(cap['spread'], 1e-9):.0f}× the combined std."
        )
    else:
        out.append(
            f"WARNING: capacity check failed: the small model ({pm(rows[SMALL]['final'])} bits/byte) is not "
            f"clearly worse than the big one ({pm(rows[BIG]['final'])}) at this budget (gap "
            f"{cap['gap']:.3f}, needed > 3 × {cap['spread']:.3f}); this run cannot judge growth."
        )
    wins, ties, losses = [], [], []
    for m, r in rows.items():
        if not m.startswith("grown"):
            continue
        fr = [f for f in r["reach_fraction"] if f is not None]
        word = r["vs_big"].split("(")[1].rstrip(")")
        reach_s = (
            f"reached the big model's final loss at {pm(fr, 2)} of its compute in {r['reached']}/{n} seeds"
            if fr
            else f"did not reach the big model's final loss within the budget in any of {n} seeds"
        )
        line = f"{m}: final {pm(r['final'])} bits/byte, {r['vs_big']} against big from scratch; {reach_s}."
        out.append(line)
        clear_saving = r["reached"] == n and np.mean(fr) + np.std(fr) < 1.0
        (
            wins
            if word == "better" or (word == "no difference" and clear_saving)
            else losses
            if word == "worse"
            else ties
        ).append(m)
    for g in cfg.growth:  # carried-over AdamW state against a fresh AdamW, per growth point and depth order
        for m in rows:
            twin = m.replace("(fresh AdamW)", "(AdamW state carried)")
            if m.startswith(f"grown at {g:.0%}") and m.endswith("(fresh AdamW)") and twin in rows:
                out.append(
                    f"{twin[: -len(' (AdamW state carried)')]}: AdamW state carried against a fresh AdamW: "
                    f"{compare(rows[twin]['final'], rows[m]['final'])}."
                )
    if not cap["passed"]:
        out.append("Verdict: none (the capacity check failed).")
    elif wins:
        best = min(wins, key=lambda m: np.mean([f for f in rows[m]["reach_fraction"] if f is not None] or [9]))
        fr = [f for f in rows[best]["reach_fraction"] if f is not None]
        saving = f", saving {1 - np.mean(fr):.0%} of the big model's training compute" if fr else ""
        out.append(
            f"Verdict: growing paid off here: {best} matched or beat the big model trained from scratch "
            f"at equal FLOPs{saving}."
        )
    elif ties and not losses:
        out.append(
            "Verdict: no gain: the grown runs end where the big model trained from scratch ends "
            "(no difference at equal FLOPs), so growing did not save compute in this experiment."
        )
    elif ties:
        out.append(
            "Verdict: no gain: no grown run beat the big model trained from scratch at equal FLOPs; "
            f"{', '.join(losses)} ended worse."
        )
    else:
        out.append(
            "Verdict: not worth it here: every grown run ended worse than the big model trained from "
            "scratch at equal FLOPs."
        )
    if cap["passed"] and wins and losses:
        out.append(f"Not every growth paid off: {', '.join(losses)} ended worse than the big model from scratch.")
    out.append(
        f"Caveat: the big-from-scratch baseline's schedule is fully decayed at the same budget, the strict "
        f'comparison under which "No Train No Gain" (Kaddour et al., 2023) saw the gains of layer stacking '
        f"vanish; this is one pair of small models (d {cfg.small[0]} × {cfg.small[1]} → d {cfg.big[0]} × "
        f"{cfg.big[1]}), one budget ({cfg.budget:.3g} FLOPs) and {n} seeds of byte-level text, and says "
        f"nothing by itself about large models or other budgets."
    )
    return out


def table(cfg: Config, summary: dict) -> list[str]:
    rows = summary["rows"]
    n = len(rows[BIG]["final"])
    lines = [
        "| method | final val bits/byte | Δ vs big from scratch | FLOPs to reach big's final / big's | reached |",
        "|---|---|---|---|---|",
    ]
    for m, r in rows.items():
        fr = [f for f in r["reach_fraction"] if f is not None]
        lines.append(
            f"| {m} | {pm(r['final'])} | {r['vs_big'] or '—'} | {pm(fr, 2) if fr else '—'} | {r['reached']}/{n} |"
        )
    return lines


def describe(
    cfg: Config, data: Corpus, loaded: list[str], orders: list[str], fs: int, fb: int, seeds: int
) -> list[str]:
    (d0, l0, h0), (d1, l1, h1) = cfg.small, cfg.big
    ps, pb = (sum(p.numel() for p in GPT(**arch(a, cfg)).parameters()) for a in (cfg.small, cfg.big))
    return [
        f"Configuration `{cfg.name}`: small d {d0} × {l0} layer(s), {h0} heads ({ps:,} parameters, {fs:,} training "
        f"FLOPs/token) → big d {d1} × {l1} layers, {h1} heads ({pb:,} parameters, {fb:,} training FLOPs/token); "
        f"context {cfg.ctx}, batch {cfg.batch}, AdamW peak lr {cfg.lr_small:g} (small) / {cfg.lr_big:g} (big, grown) (betas {cfg.betas}, weight decay "
        f"{cfg.weight_decay}), warmup {cfg.warmup:.0%} then cosine to {cfg.floor:g} × lr at each run's own end, "
        f"re-warmup {cfg.rewarm:.0%} after growth; budget {cfg.budget:.3g} training FLOPs per run "
        f"(big: {cfg.budget / fb / 1e6:.2f} M tokens); growth at {', '.join(f'{g:.0%}' for g in cfg.growth)} of it; "
        f"{seeds} seeds.",
        f"Data: {data.root} (Python {sys.version.split()[0]}), {data.files[0]} training files "
        f"({len(data.train):,} bytes) and {data.files[1]} validation files ({len(data.val):,} bytes), "
        f"sha256 {data.sha256[:16]}…; validation bits/byte on {cfg.val_windows} fixed windows of {cfg.ctx} bytes.",
        f'Growth: export (TorchScript) → `widen_model` → `deepen_model("layers", block="copy", '
        f"order=…)` ({' and '.join(depth_orders(cfg))}) → {', '.join(loaded) or '—'} → logits checked against the "
        f"small model's; each grown model trains on with a fresh AdamW"
        + (
            " and with the small run's AdamW state carried over (`grow_optimizer_state`)"
            if cfg.carry is None
            else f"; grown at {', '.join(f'{g:.0%}' for g in cfg.growth if carried(cfg, g)) or 'no point'} also with the "
            f"small run's AdamW state carried over (`grow_optimizer_state`)"
        )
        + "."
        + (
            f" With one small layer the two depth orders give the same model ({len(orders)} seed(s) checked: every "
            f"weight equal), so one runs."
            if orders
            else ""
        ),
    ]


def plot(cfg: Config, seeds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(seeds[0]["runs"])
    fig, axes = plt.subplots(1, len(cfg.growth), figsize=(6.4 * len(cfg.growth), 5), squeeze=False, sharey=True)
    finals = [s["runs"][BIG]["points"][-1][1] for s in seeds]
    palette = ["tab:blue", "tab:green", "tab:red", "tab:purple", "tab:orange", "tab:brown"]
    colour = {BIG: "black", SMALL: "tab:gray"}
    for ax, g in zip(axes[0], cfg.growth):
        tag = f"grown at {g:.0%}"
        for m in methods:
            if m not in (BIG, SMALL) and not m.startswith(tag):
                continue
            variant = m.split("%", 1)[1] if m.startswith("grown at") else m  # the same colour in every panel
            if variant not in colour:
                colour[variant] = palette[(len(colour) - 2) % len(palette)]
            c = colour[variant]
            pts = np.array([s["runs"][m]["points"] for s in seeds])  # seeds × points × (flops, bpb, lr)
            f, v = pts[0, :, 0], pts[:, :, 1]
            ax.plot(f, v.mean(0), color=c, lw=1.6, label=m)
            if len(seeds) > 1:
                ax.fill_between(f, v.mean(0) - v.std(0), v.mean(0) + v.std(0), color=c, alpha=0.2, lw=0)
        ax.axvline(g * cfg.budget, color="k", ls=":", lw=1)
        ax.axhline(float(np.mean(finals)), color="k", ls="--", lw=0.8)
        ax.set_title(f"grown at {g:.0%} of the budget (dotted)")
        ax.set_xlabel("training FLOPs")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[0, 0].set_ylabel("validation bits/byte")
    lo = min(float(np.min([p[1] for s in seeds for r in s["runs"].values() for p in r["points"]])), min(finals))
    axes[0, 0].set_ylim(lo - 0.05, float(np.mean(finals)) + 1.0)
    fig.suptitle(
        f"Is growing worth it? d{cfg.small[0]}×{cfg.small[1]} → d{cfg.big[0]}×{cfg.big[1]}, byte-level "
        f"stdlib; mean ± std over {len(seeds)} seeds; dashed: big's final",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(path: Path, text: str) -> None:
    """Replace what stands between the README's worth-it markers with `text`."""
    readme = path.read_text()
    if README_BEGIN not in readme or README_END not in readme:
        raise SystemExit(f"worth_it_lm: {path} has no {README_BEGIN} … {README_END} markers")
    head, rest = readme.split(README_BEGIN, 1)
    path.write_text(head + README_BEGIN + "\n" + text + "\n" + README_END + rest.split(README_END, 1)[1])


# -- main ----------------------------------------------------------------------------------------------


def throughput(cfg: Config, data: Corpus, device: str, steps: int = 6) -> dict[str, float]:
    """Training tokens per second of the small and big models (a few steps after one warm-up step)."""
    out = {}
    batches = Batches(data.train, cfg.ctx, cfg.batch, 12345, device)
    for name, spec in (("small", cfg.small), ("big", cfg.big)):
        model = make(spec, cfg, 0, device)
        opt = adamw(model, cfg)
        for k in range(steps + 1):
            if k == 1:
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            x, y = batches(k)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        out[name] = steps * cfg.batch * cfg.ctx / (time.perf_counter() - t0)
    return out


def job_costs(cfg: Config, tps: dict[str, float]) -> dict[str, float]:
    """Seconds of training of each kind of job at the measured throughput (evaluations excluded)."""
    fs = GPT(**arch(cfg.small, cfg)).train_flops_per_token()
    fb = GPT(**arch(cfg.big, cfg)).train_flops_per_token()
    small_s, big_s = cfg.budget / fs / tps["small"], cfg.budget / fb / tps["big"]
    out = {"big": big_s, "small": small_s}
    for g in cfg.growth:  # the small phase, then each depth order with a fresh (and a carried) AdamW
        variants = len(depth_orders(cfg)) * (2 if carried(cfg, g) else 1)
        out[f"grown {g}"] = g * small_s + variants * (1 - g) * big_s
    return out


def estimate(costs: dict[str, float], seeds: int, workers: int) -> float:
    """Wall seconds of training: every seed's jobs spread evenly over the workers."""
    return seeds * sum(costs.values()) / max(1, workers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and budget (a smoke run of seconds)")
    ap.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cuda runs the larger 'cuda' configuration on a GPU"
    )
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the configuration's)")
    ap.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at once, each in its own process (default: one per CPU core, at most 2; "
        "1 with --device cuda)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of each process (default 1)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the plot, table and JSON go")
    ap.add_argument("--readme", type=Path, default=None, help="also write the results into this README")
    ap.add_argument("--budget", type=float, default=None, help="training FLOPs per run (default: the configuration's)")
    ap.add_argument(
        "--lr", type=float, default=None, help="peak learning rate of every run (default: the configuration's)"
    )
    ap.add_argument("--ctx", type=int, default=None, help="context length (default: the configuration's)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the configuration's)")
    ap.add_argument(
        "--growth",
        type=float,
        nargs="+",
        default=None,
        help="growth points as fractions of the budget (default: the configuration's)",
    )
    ap.add_argument(
        "--resummarise",
        type=Path,
        default=None,
        metavar="JSON",
        help="no training: summarise the results in this JSON (worth_it_lm.json or .partial.json)",
    )
    ap.add_argument(
        "--runs",
        nargs="+",
        choices=("big", "small", "grown"),
        default=["big", "small", "grown"],
        help="which runs to do (a pilot); the summary needs big and small",
    )
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "worth_it_lm: --device cuda: CUDA is not available here (torch.cuda.is_available() is False)",
            file=sys.stderr,
        )
        return 2
    cfg = CONFIGS["quick" if args.quick else args.device]
    if args.budget or args.growth or args.ctx or args.batch or args.lr:
        cfg = replace(
            cfg,
            budget=args.budget or cfg.budget,
            growth=tuple(args.growth or cfg.growth),
            ctx=args.ctx or cfg.ctx,
            batch=args.batch or cfg.batch,
            lr_small=args.lr or cfg.lr_small,
            lr_big=args.lr or cfg.lr_big,
        )
    warnings.filterwarnings("ignore", module="onnx2torch")
    seeds = args.seeds or cfg.seeds
    workers = args.jobs or (1 if args.device == "cuda" else max(1, min(2, len(os.sched_getaffinity(0)))))
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    data = corpus(cfg.val_percent)
    log(
        f"corpus: {data.root}: {data.files[0]} train files, {len(data.train):,} bytes; {data.files[1]} validation "
        f"files, {len(data.val):,} bytes; sha256 {data.sha256}"
    )
    results, partial, before = [], args.out / "worth_it_lm.partial.json", 0.0
    if args.resummarise:  # the training of an earlier run, summarised again (its seeds and configuration)
        saved = json.loads(args.resummarise.read_text())
        results, seeds, before = saved["results"], len(saved["results"]), saved.get("elapsed_s", 0.0)
        cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()})
        log(f"summarising the {seeds} seed(s) of {args.resummarise} (no training)")
    fs = GPT(**arch(cfg.small, cfg)).train_flops_per_token()
    fb = GPT(**arch(cfg.big, cfg)).train_flops_per_token()
    tps = saved.get("throughput_probe", {}) if args.resummarise else throughput(cfg, data, args.device)
    if not args.resummarise:
        costs = job_costs(cfg, tps)
        log(
            f"throughput ({args.threads} thread(s)): small {tps['small']:,.0f} tokens/s ({tps['small'] * fs / 1e9:.1f} "
            f"GFLOP/s), big {tps['big']:,.0f} tokens/s ({tps['big'] * fb / 1e9:.1f} GFLOP/s); config {cfg.name}: "
            f"training alone needs about {estimate(costs, seeds, workers) / 60:.1f} min with {workers} process(es)"
        )

        def on_seed(done: list[dict]) -> None:  # finished seeds, kept until the summary is written
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(
                json.dumps(
                    {
                        "config": asdict(cfg),
                        "results": done,
                        "throughput_probe": tps,
                        "elapsed_s": time.perf_counter() - t_start,
                    }
                )
            )

        results = run_jobs(
            cfg, jobs_for(cfg, seeds, tuple(args.runs)), costs, data, args.device, workers, args.threads, log, on_seed
        )
    if not {"big", "small"} <= set(args.runs):
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "worth_it_lm_pilot.json").write_text(json.dumps({"config": asdict(cfg), "results": results}))
        log(f"pilot of {', '.join(args.runs)} done in {(time.perf_counter() - t_start) / 60:.1f} min; no summary")
        return 0
    summary = summarise(cfg, results)
    loaded = sorted({h for r in results for h in r["loaded"]})
    orders = [x for r in results for x in r["orders"]]
    head = describe(cfg, data, loaded, orders, fs, fb, seeds)
    tab = table(cfg, summary)
    words = verdict(cfg, summary)
    elapsed = before or time.perf_counter() - t_start
    timing = {
        k: [sum(r["timing"].get(k, [0, 0])[i] for r in results) for i in (0, 1)] for k in ("small", "big", "grown")
    }
    speed = ", ".join(f"{k} {v[1] / v[0]:,.0f} tokens/s" for k, v in timing.items() if v[0] > 0)
    foot = (
        f"FLOPs to reach: the first point (linear between evaluations) where a run's validation bits/byte is at "
        f"or below the big-from-scratch run's final value of the same seed, over the budget (big itself: 1.00 "
        f"at its last step); mean ± std over the seeds that reached it. Δ: mean difference of final bits/byte; "
        f'"no difference" when |Δ| ≤ std + std. Whole run: {elapsed / 60:.1f} min ({speed}).'
    )
    args.out.mkdir(parents=True, exist_ok=True)
    md = "\n".join(
        [
            "# Is growing worth it? (byte-level language model)",
            "",
            "![validation bits/byte against training FLOPs](worth_it_lm.png)",
            "",
            *[f"- {x}" for x in head],
            "",
            *tab,
            "",
            foot,
            "",
            *[f"- {x}" for x in words],
            "",
        ]
    )
    (args.out / "worth_it_lm.md").write_text(md)
    (args.out / "worth_it_lm.json").write_text(
        json.dumps(
            {
                "config": asdict(cfg),
                "seeds": seeds,
                "device": args.device,
                "threads": args.threads,
                "jobs": workers,
                "corpus": {
                    "root": data.root,
                    "python": sys.version.split()[0],
                    "train_bytes": len(data.train),
                    "val_bytes": len(data.val),
                    "files": data.files,
                    "sha256": data.sha256,
                },
                "depth_orders": depth_orders(cfg),
                "flops_per_token": {"small": fs, "big": fb},
                "throughput_probe": tps,
                "elapsed_s": elapsed,
                "summary": summary,
                "verdict": words,
                "results": results,
            }
        )
    )
    plot(cfg, results, args.out / "worth_it_lm.png")
    if partial.exists() and not args.resummarise:
        partial.unlink()
    if args.readme:
        rel = Path("bench/results") if args.out.resolve() == RESULTS.resolve() else args.out
        update_readme(
            args.readme,
            "\n".join(
                [
                    f"![validation bits/byte against training FLOPs]({rel}/worth_it_lm.png)",
                    "",
                    *[f"- {x}" for x in head],
                    "",
                    *tab,
                    "",
                    foot,
                    "",
                    *[f"**{x}**" if x.startswith(("Verdict", "WARNING")) else x for x in words for x in (x, "")],
                ]
            ).rstrip(),
        )
    print("\n".join(["", *head, "", *tab, "", foot, "", *words]))
    log(
        f"wrote {args.out / 'worth_it_lm.png'}, {args.out / 'worth_it_lm.md'}, {args.out / 'worth_it_lm.json'} "
        f"in {elapsed / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
