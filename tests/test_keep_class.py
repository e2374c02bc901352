"""Keep training in your own model class (issue 14): grown Hugging Face models load into a bigger instance of
their own `transformers` class, deepened layers renumber, the growth map records every step and an optimiser's
state carries over.

Models (tests/hf_build.py): BertForSequenceClassification, GPT2LMHeadModel, LlamaForCausalLM with
grouped-query attention and ViTForImageClassification from tiny configs (2 layers, hidden 32), with
trained-like weights, exported by both torch exporters where they work (TorchScript cannot export GPT-2 and
LLaMA: aten::diff). Each export is made once per module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

import hf_build as hb  # noqa: E402

import onnxgrow  # noqa: E402
from onnxgrow import growth_map  # noqa: E402
from onnxgrow.deepen import deepen_model  # noqa: E402
from onnxgrow.errors import OnnxGrowError  # noqa: E402
from onnxgrow.torch import grow_optimizer_state, state_dict_for  # noqa: E402
from onnxgrow.widen import widen_model  # noqa: E402

TOL = 1e-4
MLP = Path(__file__).resolve().parent.parent / "models" / "mlp.onnx"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(kind, exporter, tie) -> (the small module, the path of its export); each exported once."""
    cache: dict = {}
    folder = tmp_path_factory.mktemp("hf")

    def get(kind: str, exporter: str, tie: bool = True):
        if (kind, exporter, tie) not in cache:
            small = hb.build(kind, tie=tie)
            path = hb.export(small, kind, folder / f"{kind}-{exporter}-{tie}.onnx", exporter)
            cache[kind, exporter, tie] = small, path
        return cache[kind, exporter, tie]

    return get


def _run(model, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def _normalised(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


# -- what each growth is and the config of the class that expresses it --------------------------------------
# BERT, GPT-2 and ViT tie the head size to hidden / heads: the class expresses --hidden only with --heads
# (hidden 64, 8 heads of 8); BERT's pooler (hidden -> hidden) grows with them. LLaMA has its own head_dim.


def _widen(**kwargs):
    return lambda kind, path: widen_model(path, **kwargs).model


def _hidden(kind: str, path):
    if kind == "llama":
        return widen_model(path, hidden="x2").model
    layers = {"bert.pooler.dense.weight": "x2"} if kind == "bert" else None
    return widen_model(path, layers, hidden="x2", heads="x2").model


def _depth(order: str):
    return lambda kind, path: deepen_model(path, "layers", block="copy", order=order, approximate=kind == "bert").model


GROWTH = {
    "ffn": (_widen(ffn="x2"), dict(ffn=128)),
    "heads": (_widen(heads="x2"), dict(heads=8, kv_heads=4)),
    "hidden": (_hidden, dict(hidden=64, heads=8)),
    "depth-interleave": (_depth("interleave"), dict(layers=4)),
    "depth-stack": (_depth("stack"), dict(layers=4)),
}
CASES = [
    pytest.param(kind, exporter, growth, id=f"{kind}-{exporter}-{growth}")
    for kind in hb.KINDS
    for exporter in hb.EXPORTERS[kind]
    for growth in GROWTH
    if growth != "heads" or kind == "llama"
]


def _bigger(kind: str, growth: str) -> torch.nn.Module:
    sizes = dict(GROWTH[growth][1])
    if kind == "llama" and growth == "hidden":
        sizes = dict(hidden=64)
    if kind == "gpt2" and growth == "hidden":
        sizes["tie"] = False  # the output head grows apart from the token embedding (see the tied test)
    return hb.build(kind, noise=0, seed=7, **sizes)


def _loss(kind: str, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    labels = x if kind in ("gpt2", "llama") else torch.arange(x.shape[0]) % 3
    return module(x, labels=labels).loss


@pytest.mark.parametrize("kind,exporter,growth", CASES)
def test_bigger_class_computes_what_onnxruntime_computes_and_trains(exported, kind, exporter, growth):
    small, path = exported(kind, exporter, tie=not (kind == "gpt2" and growth == "hidden"))
    grown = GROWTH[growth][0](kind, path)
    big = _bigger(kind, growth).eval()
    sd = state_dict_for(big, grown, base=small)
    big.load_state_dict(sd, strict=True)
    x = hb.example(kind, seed=5)
    want = _run(grown, x)
    with torch.no_grad():
        got = big(x).logits.numpy()
        before = small(x).logits.numpy()
    assert _normalised(got, want) <= TOL
    if not (kind == "bert" and growth.startswith("depth")):  # BERT is post-norm: its copies are approximate
        assert _normalised(got, before) <= TOL  # the bigger module computes what the small one did
    # two Adam steps (no weight decay) move every parameter: the layers behind a copy's zeroed projection
    # get their first gradient at the second step
    big.train()
    start = {k: p.detach().clone() for k, p in big.named_parameters()}
    opt = torch.optim.Adam(big.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        _loss(kind, big, x).backward()
        opt.step()
    frozen = [k for k, p in big.named_parameters() if torch.equal(p.detach(), start[k])]
    assert frozen == []


@pytest.mark.parametrize(
    "kind,exporter", [("llama", "dynamo"), ("bert", "dynamo"), ("gpt2", "dynamo"), ("vit", "torchscript")]
)
def test_constants_the_module_computes_are_skipped_and_listed(exported, kind, exporter):
    """Rotary tables, causal masks and folded lookups have no place in the module: not an error, but listed;
    what the model lacks (a position table whose lookup was folded, a class token) comes from base."""
    small, path = exported(kind, exporter)
    big = hb.build(kind, noise=0, seed=7)
    sd = state_dict_for(big, path, base=small)
    assert sd.skipped and all("the module computes itself" in s for s in sd.skipped)
    ref = small.state_dict()
    assert [k for k in ref if not torch.equal(sd[k], ref[k])] == []  # an ungrown export gives the module back
    expected_base = {
        "llama": [],
        "bert": ["bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight"],
        "gpt2": ["transformer.wpe.weight"],
        "vit": ["vit.embeddings.cls_token"],
    }[kind]
    assert sd.from_base == expected_base
    if kind == "llama":
        names = " ".join(sd.skipped)
        assert "where" in names and "unsqueeze" in names  # the causal mask and the rotary cos/sin tables


def test_without_base_the_error_names_what_is_missing(exported):
    small, path = exported("bert", "dynamo")
    with pytest.raises(OnnxGrowError) as err:
        state_dict_for(hb.build("bert", noise=0), path)
    text = str(err.value)
    assert "not in the model: bert.embeddings.position_embeddings.weight [16, 32]" in text and "base=" in text
    # grown with --hidden, the folded lookups grew: without base they have no place
    grown = _hidden("bert", path)
    with pytest.raises(OnnxGrowError, match="grown; pass base="):
        state_dict_for(_bigger("bert", "hidden"), grown)
    # a base of the wrong size does not silently fill a grown key
    with pytest.raises(OnnxGrowError, match="not in the model: bert.embeddings.position_embeddings.weight"):
        state_dict_for(_bigger("bert", "hidden"), grown, base=hb.build("bert", hidden=48, heads=6, noise=0))


def test_a_tied_output_head_that_grew_apart_is_an_error(exported):
    """GPT-2 ties lm_head to the token embedding; --hidden copies embedding units but splits the head's weights
    between the copies, so the two differ: a tied bigger module cannot hold them (one error says so)."""
    small, path = exported("gpt2", "dynamo")
    grown = _hidden("gpt2", path)
    with pytest.raises(OnnxGrowError, match="tied.*tie_word_embeddings=False"):
        state_dict_for(hb.build("gpt2", hidden=64, heads=8, noise=0), grown, base=small)
    # heads and feed-forward width leave the tie intact
    grown = widen_model(path, ffn="x2").model
    big = hb.build("gpt2", ffn=128, noise=0)
    big.load_state_dict(state_dict_for(big, grown, base=small))
    assert big.lm_head.weight is big.transformer.wte.weight


def test_a_module_too_shallow_for_the_copies_is_an_error(exported):
    small, path = exported("llama", "dynamo")
    grown = deepen_model(path, "layers", block="copy").model
    with pytest.raises(OnnxGrowError) as err:
        state_dict_for(hb.build("llama", noise=0), grown, base=small)
    assert "no place in the module" in str(err.value) and "model.layers.3.input_layernorm.weight" in str(err.value)


# -- deepen: order and layer numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("order,expected", [("interleave", [0, 0, 1, 1]), ("stack", [0, 1, 0, 1])])
def test_copied_layers_take_their_new_numbers(exported, order, expected):
    small, path = exported("llama", "dynamo")
    result = deepen_model(path, "layers", block="copy", order=order)
    step = growth_map.steps(result.model)[-1]
    assert [x["from"] for x in step["layers"]] == expected
    assert [x["copy"] for x in step["layers"]] == ([0, 1, 0, 1] if order == "interleave" else [0, 0, 1, 1])
    assert step["layer_scopes"] == ["model.layers"]
    names = {t.name for t in result.model.graph.initializer}
    assert {f"model.layers.{i}.input_layernorm.weight" for i in range(4)} <= names
    assert not any("//" in n.name for n in result.model.graph.node)
    big = hb.build("llama", layers=4, noise=0)
    big.load_state_dict(state_dict_for(big, result.model, base=small))
    ref = small.state_dict()
    for new, old in enumerate(expected):
        copy = step["layers"][new]["copy"]
        for leaf in ("input_layernorm.weight", "self_attn.q_proj.weight", "mlp.up_proj.weight"):
            assert torch.equal(big.state_dict()[f"model.layers.{new}.{leaf}"], ref[f"model.layers.{old}.{leaf}"])
        zero = torch.count_nonzero(big.state_dict()[f"model.layers.{new}.self_attn.o_proj.weight"]) == 0
        assert zero == bool(copy)  # each copy's projections into the residual are zero
        zero = torch.count_nonzero(big.state_dict()[f"model.layers.{new}.mlp.down_proj.weight"]) == 0
        assert zero == bool(copy)


@pytest.mark.parametrize("kind,exporter", [("llama", "dynamo"), ("bert", "torchscript")])
def test_a_one_layer_models_copy_takes_number_one(kind, exporter, tmp_path):
    """With one layer, the word that names every node of the layer (and nothing outside it) numbers it."""
    small = hb.build(kind, layers=1)
    path = hb.export(small, kind, tmp_path / "one.onnx", exporter)
    result = deepen_model(path, "layers", block="copy", approximate=kind == "bert")
    step = growth_map.steps(result.model)[-1]
    assert [(x["from"], x["copy"]) for x in step["layers"]] == [(0, 0), (0, 1)]
    assert len(step["layer_scopes"]) == 1 and step["layer_scopes"][0].endswith("layer" if kind == "bert" else "layers")
    big = hb.build(kind, layers=2, noise=0)
    big.load_state_dict(state_dict_for(big, result.model, base=small))
    ref = {k: v for k, v in small.state_dict().items() if ".0." in k}
    got = big.state_dict()
    for key, value in ref.items():  # the original in place 0, its copy's query projection in place 1
        assert torch.equal(got[key], value), key
        if key.endswith(("q_proj.weight", "query.weight")):
            assert torch.equal(got[key.replace(".0.", ".1.", 1)], value), key


def test_cli_deepen_order_stack(exported, tmp_path):
    small, path = exported("gpt2", "dynamo")
    out = tmp_path / "deep.onnx"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxgrow",
            "deepen",
            str(path),
            "-o",
            str(out),
            "--block",
            "copy",
            "--after",
            "layers",
            "--order",
            "stack",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "stacked: the copies follow b3" in res.stdout
    big = hb.build("gpt2", layers=4, noise=0)
    big.load_state_dict(state_dict_for(big, out, base=small))
    assert torch.equal(big.transformer.h[2].ln_1.weight, small.transformer.h[0].ln_1.weight)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxgrow",
            "deepen",
            str(path),
            "-o",
            str(tmp_path / "x.onnx"),
            "--after",
            "layers",
            "--order",
            "stack",
            "--block",
            "residual",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--order" in bad.stderr and not (tmp_path / "x.onnx").exists()


# -- the growth map ------------------------------------------------------------------------------------------


def _weights(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnxgrow.load(model).graph.initializer}


def test_growth_map_says_where_every_old_value_went():
    """widen (net2net), deepen (residual), widen again (noise): each grown weight, traced back through the
    composed steps, holds its source's old values where the map says (split on the consumer axes)."""
    first = onnxgrow.widen(MLP, {"/fc1/Gemm": "x2"}, init="net2net", seed=3)
    deep = onnxgrow.deepen(first, "/Relu", block="residual")
    last = onnxgrow.widen(deep, {"/fc2/Gemm": "+8"}, init="noise")
    steps = growth_map.steps(last)
    assert [s["op"] for s in steps] == ["widen", "deepen", "widen"]
    old, new = _weights(MLP), _weights(last)
    checked = 0
    for name, value in new.items():
        origin = growth_map.trace(steps, name)
        if origin.kind == "new":
            assert name.startswith("/Relu/deepen0/")
            continue
        expect, fresh = old[origin.root].astype(np.float64), np.zeros(old[origin.root].shape, bool)
        for axis, amap in sorted(origin.axes.items()):
            idx = np.where(amap.src >= 0, amap.src, 0)
            shape = [1] * expect.ndim
            shape[axis] = -1
            expect = np.take(expect, idx, axis=axis) * amap.value.reshape(shape)
            fresh = np.take(fresh, idx, axis=axis) | (amap.src < 0).reshape(shape)
        assert expect.shape == value.shape, name
        assert np.allclose(np.where(fresh, 0, expect), np.where(fresh, 0, value), rtol=1e-6, atol=1e-7), name
        checked += bool(origin.axes)
    assert checked >= 5  # fc1 and fc2 (twice), their biases, fc3
    fc2 = growth_map.trace(steps, "fc2.weight")
    assert fc2.old_shape == [32, 64] and sorted(fc2.axes) == [0, 1]


def test_growth_map_survives_save_and_both_exports(tmp_path):
    grown = onnxgrow.deepen(onnxgrow.widen(MLP, {"/fc1/Gemm": "x2"}, init="net2net"), "/Relu", block="residual")
    recorded = growth_map.as_dict(grown)
    assert recorded is not None and len(recorded["steps"]) == 2
    path = tmp_path / "grown.onnx"
    onnxgrow.save(grown, path)
    assert growth_map.as_dict(onnxgrow.load(path)) == recorded
    for target, out in (("torch", tmp_path / "grown.pt"), ("mxnet", tmp_path / "grown_mx.onnx")):
        res = subprocess.run(
            [sys.executable, "-m", "onnxgrow", "export", str(path), "--to", target, "-o", str(out)],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr
    module = torch.load(tmp_path / "grown.pt", weights_only=False)
    assert module.growth_map == recorded
    import onnx

    assert growth_map.as_dict(onnx.load(str(tmp_path / "grown_mx.onnx"))) == recorded


# -- optimiser state ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LLaMA trained 3 Adam steps, its optimiser, and its export."""
    small = hb.build("llama").train()
    x = hb.example("llama", seed=1)
    opt = torch.optim.Adam(small.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        _loss("llama", small, x).backward()
        opt.step()
    small.eval()
    return small, opt, hb.export(small, "llama", tmp_path_factory.mktemp("trained") / "llama.onnx", "dynamo")


def test_adam_state_old_entries_kept_new_ones_zero(trained):
    small, opt, path = trained
    grown = widen_model(path, ffn="x2").model  # noise: 64 fresh units per layer
    grown = deepen_model(grown, "layers", block="copy", order="stack").model
    big = hb.build("llama", ffn=128, layers=4, noise=0)
    big.load_state_dict(state_dict_for(big, grown, base=small))
    new = grow_optimizer_state(opt, small, big, grown)
    assert type(new) is torch.optim.Adam and new.param_groups[0]["lr"] == 1e-3 and new is not opt
    old = {k: opt.state[p] for k, p in small.named_parameters()}
    for layer in range(2):
        for leaf, axis in (("mlp.up_proj.weight", 0), ("mlp.down_proj.weight", 1), ("self_attn.q_proj.weight", 0)):
            key = f"model.layers.{layer}.{leaf}"
            state = new.state[big.get_parameter(key)]
            assert torch.equal(state["step"], old[key]["step"])
            for moment in ("exp_avg", "exp_avg_sq"):
                kept = state[moment].narrow(axis, 0, old[key][moment].shape[axis])
                assert torch.equal(kept, old[key][moment])  # old entries: unchanged
                rest = state[moment].narrow(axis, kept.shape[axis], state[moment].shape[axis] - kept.shape[axis])
                assert rest.numel() == 0 or torch.count_nonzero(rest) == 0  # fresh units: zero
    # the stacked copies (layers 2 and 3) are new parameters: no state, as in a fresh optimiser
    copies = [p for k, p in big.named_parameters() if k.startswith(("model.layers.2.", "model.layers.3."))]
    assert copies and not any(p in new.state for p in copies)
    assert {id(p) for g in new.param_groups for p in g["params"]} == {id(p) for p in big.parameters()}


def test_first_update_of_a_new_parameter_is_no_larger_than_a_fresh_optimisers(trained):
    small, opt, path = trained
    grown = deepen_model(path, "layers", block="copy").model
    big = hb.build("llama", layers=4, noise=0)
    big.load_state_dict(state_dict_for(big, grown, base=small))
    twin = hb.build("llama", layers=4, noise=0)
    twin.load_state_dict(big.state_dict())
    carried = grow_optimizer_state(opt, small, big, grown)
    fresh = torch.optim.Adam(twin.parameters(), lr=1e-3)
    x = hb.example("llama", seed=2)
    deltas = []
    for module, optimiser in ((big, carried), (twin, fresh)):
        start = {k: p.detach().clone() for k, p in module.named_parameters()}
        optimiser.zero_grad()
        _loss("llama", module, x).backward()
        optimiser.step()
        deltas.append({k: (p.detach() - start[k]).abs().max().item() for k, p in module.named_parameters()})
    new_keys = [k for k in deltas[0] if k.startswith(("model.layers.1.", "model.layers.3."))]  # the copies
    assert new_keys and all(deltas[0][k] <= deltas[1][k] * (1 + 1e-6) for k in new_keys)
    assert any(deltas[0][k] > 0 for k in new_keys)


@pytest.mark.parametrize("kind,how", [("llama", "hidden"), ("llama", "ffn"), ("gpt2", "hidden")])
def test_carried_moments_are_the_gradients_the_grown_model_computes(exported, kind, how):
    """Net2Net copies: after one optimiser step with lr 0 on a batch, the small model's moments are
    (1 - beta1) g and (1 - beta2) g^2, and SGD's momentum is g. Carried over, they must be what the grown model's
    own gradient on that batch gives: each copy's incoming weights get 1/copies of the gradient (so the first
    moment is divided by the copy count, the second by its square), its outgoing weights the whole gradient."""
    small, path = exported(kind, "dynamo", tie=False)
    if how == "ffn":
        grown, sizes = widen_model(path, ffn="x2", init="net2net").model, dict(ffn=128)
    elif kind == "llama":
        grown, sizes = widen_model(path, hidden="x2", init="net2net").model, dict(hidden=64)
    else:  # new heads copied too, so that every unit has a source
        grown, sizes = widen_model(path, hidden="x2", heads="x2", init="net2net").model, dict(hidden=64, heads=8)
    grown = deepen_model(grown, "layers", block="copy").model
    big = hb.build(kind, noise=0, layers=4, tie=False, **sizes)
    big.load_state_dict(state_dict_for(big, grown, base=small))
    x = hb.example(kind, seed=3)
    for make in (lambda ps: torch.optim.Adam(ps, lr=0.0), lambda ps: torch.optim.SGD(ps, lr=0.0, momentum=0.9)):
        small.zero_grad()
        opt = make(small.parameters())
        _loss(kind, small, x).backward()
        opt.step()
        carried = grow_optimizer_state(opt, small, big, grown)
        big.zero_grad()
        _loss(kind, big, x).backward()
        scale = max(p.grad.abs().max().item() for p in big.parameters())
        checked = 0
        for key, p in big.named_parameters():
            state = carried.state.get(p)
            if state is None:
                continue
            if "momentum_buffer" in state:
                pairs = [(state["momentum_buffer"], p.grad, 1.0)]
            else:
                pairs = [(state["exp_avg"], 0.1 * p.grad, 0.1), (state["exp_avg_sq"], 0.001 * p.grad**2, 0.001 * scale)]
            for got, want, unit in pairs:
                assert (got - want).abs().max().item() <= 1e-4 * unit * scale, key
            checked += 1
        assert checked >= 15
    small.zero_grad()
