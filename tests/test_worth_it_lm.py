"""bench/worth_it_lm.py: the --quick run end to end; fair FLOP budgets; every schedule ends at its own end."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "worth_it_lm.py"

torch = pytest.importorskip("torch")
pytest.importorskip("onnx2torch")
pytest.importorskip("matplotlib")


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _train_flops_per_token(module: torch.nn.Module, layers: int, ctx: int, d: int) -> int:
    """6 × the weights of every Linear layer (one multiply-add each, forward and twice backward) + 3 × the
    attention products q·kᵀ and ·v (2 × ctx × d multiply-adds per token and layer)."""
    linear = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    return 6 * linear + 3 * 2 * 2 * layers * ctx * d


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("worth_it_lm")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--jobs", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res.stdout, json.loads((out / "worth_it_lm.json").read_text())


def test_quick_run_writes_plot_table_and_verdict(quick):
    out, stdout, data = quick
    png = out / "worth_it_lm.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = (out / "worth_it_lm.md").read_text()
    assert "| big from scratch | " in table and "| small from scratch | " in table
    for g in ("10%", "25%"):  # two growth points, each with a fresh and a carried-over AdamW
        assert f"| grown at {g} (fresh AdamW) | " in table
        assert f"| grown at {g} (AdamW state carried) | " in table
    # one small layer: the run checks that both depth orders give the same model, and says so
    assert "the two depth orders give the same model (2 seed(s) checked" in table
    for seed in data["results"]:
        for name, run in seed["runs"].items():
            if name.startswith("grown"):  # loaded into the big GPT and checked to compute the small model's logits
                note = run["notes"][0]
                assert "state_dict_for(base=small)" in note and float(note.split(" to ")[1].split()[0]) < 1e-4
    assert "Verdict" in table and ("Capacity check passed" in table or "WARNING: capacity check failed" in table)
    assert f"sha256 {data['corpus']['sha256']}" in stdout and data["corpus"]["train_bytes"] > 1_000_000
    assert data["seeds"] == 2 and len(data["results"]) == 2


def test_flops_per_token_counts_every_matrix_product(quick):
    _, _, data = quick
    gpt = _bench_module("lm_gpt")
    cfg = data["config"]
    for name in ("small", "big"):
        d, layers, heads = cfg[name]
        module = gpt.GPT(d, layers, heads, cfg["ctx"])
        assert data["flops_per_token"][name] == _train_flops_per_token(module, layers, cfg["ctx"], d)


def test_every_run_gets_the_budget_and_grown_runs_count_the_small_phase(quick):
    _, _, data = quick
    cfg = data["config"]
    tokens = cfg["batch"] * cfg["ctx"]
    fs, fb = data["flops_per_token"]["small"], data["flops_per_token"]["big"]
    for seed in data["results"]:
        for name, run in seed["runs"].items():
            phases = run["phases"]
            total = sum(p["steps"] * p["flops_per_token"] * tokens for p in phases)
            assert run["points"][-1][0] == pytest.approx(total, rel=1e-12)  # the curve ends at the FLOPs spent
            last_step = phases[-1]["flops_per_token"] * tokens
            assert abs(total - cfg["budget"]) <= last_step / 2 + 1, name  # the same budget, to half a step
            if name.startswith("grown"):
                small, grown = phases
                g = float(name.split("at ")[1].split("%")[0]) / 100
                assert (small["model"], small["flops_per_token"]) == ("small", fs)
                assert (grown["model"], grown["flops_per_token"]) == ("grown", fb)
                assert small["steps"] * fs * tokens == pytest.approx(g * cfg["budget"], abs=fs * tokens)
                assert grown["flops_start"] == pytest.approx(small["steps"] * fs * tokens)
                # the grown curve carries on from the small phase: its first grown point is after the growth
                after = [p for p in run["points"] if p[0] > grown["flops_start"]]
                assert after and all(p[0] <= total for p in after)
            else:
                assert len(phases) == 1 and phases[0]["flops_per_token"] == (fb if name.startswith("big") else fs)


def test_every_schedule_decays_to_its_floor_at_its_own_end(quick):
    _, _, data = quick
    cfg = data["config"]
    for seed in data["results"]:
        for name, run in seed["runs"].items():
            for phase in run["phases"]:  # the small phase of a grown run is a complete run of its own
                peak = cfg["lr_small"] if phase["model"] == "small" else cfg["lr_big"]
                assert phase["lr_peak"] == peak
                assert phase["lr_last"] == pytest.approx(cfg["floor"] * peak, rel=1e-12), name
            assert run["points"][-1][2] == pytest.approx(cfg["floor"] * run["phases"][-1]["lr_peak"], rel=1e-12)


def test_schedule_shape():
    bench = _bench_module("worth_it_lm")
    for steps, warmup in ((10, 1), (100, 5), (1000, 50)):
        lrs = [bench.lr_at(s, steps, warmup, 1.0, 0.1) for s in range(1, steps + 1)]
        assert lrs[warmup - 1] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=1e-15)
        assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))  # warms up
        assert all(a >= b for a, b in zip(lrs[warmup - 1 :], lrs[warmup:]))  # then only decays
        mid = warmup + (steps - warmup) // 2
        assert lrs[mid - 1] == pytest.approx(
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (mid - warmup) / (steps - warmup)))
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_says_so_in_one_line():
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "CUDA is not available" in res.stderr


def test_results_replace_the_readme_block_and_nothing_else(tmp_path):
    bench = _bench_module("worth_it_lm")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{bench.README_BEGIN}\nold results\n{bench.README_END}\n\nafter\n")
    bench.update_readme(readme, "new table\n\nnew verdict")
    assert readme.read_text() == (
        f"# x\n\nbefore\n\n{bench.README_BEGIN}\nnew table\n\nnew verdict\n{bench.README_END}\n\nafter\n"
    )
    real = (ROOT / "README.md").read_text()
    assert real.count(bench.README_BEGIN) == 1 and real.count(bench.README_END) == 1
