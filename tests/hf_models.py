"""Hugging Face transformers from tiny configs, exported to ONNX (for the tests; nothing is downloaded).

`export_hf(name, path)` builds one of `NAMES` (BERT, DistilBERT, ViT, GPT-2, LLaMA) from a tiny config,
wraps it so that it returns one tensor (Hugging Face models return dataclasses), and exports it with torch's
dynamo exporter (default) or the TorchScript one. `trained=True` adds small noise to every parameter, as
training would: a freshly initialised model has many equal tensors (every zero bias of one shape, every
LayerNorm weight of ones), which the exporters merge into one initializer read by unrelated nodes.

Encoders output their last hidden state, causal LMs their logits (with `use_cache=False`), ViT its last
hidden state. LLaMA has grouped-query attention (4 query heads on 2 key/value heads). Inputs are token ids (batch × seq, int64) or images (batch × 3 × 16 × 16, float32).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

VOCAB = 50
HIDDEN = 32
HEADS = 2
FFN = 64
SEQ = 16
IMAGE = 16  # ViT: 16 × 16 images in 4 × 4 patches (16 patches + the class token)
NAMES = ("bert", "distilbert", "vit", "gpt2", "llama")
#: the models torch's TorchScript exporter takes (GPT-2 and LLaMA: it has no rule for aten::diff); dynamo takes all
TORCHSCRIPT = ("bert", "distilbert", "vit")


class Wrap(nn.Module):
    """A Hugging Face model as a module with one tensor in and one tensor out (what the exporters want)."""

    def __init__(self, model: nn.Module, causal: bool) -> None:
        super().__init__()
        self.m = model
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return self.m(x, use_cache=False).logits
        return self.m(x).last_hidden_state


def _bert(layers: int, **kw) -> nn.Module:
    from transformers import BertConfig, BertModel

    cfg = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=32,
    )
    return BertModel(BertConfig(**{**cfg, **kw}), add_pooling_layer=False)


def _distilbert(layers: int, **kw) -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    cfg = dict(vocab_size=VOCAB, dim=HIDDEN, n_layers=layers, n_heads=HEADS, hidden_dim=FFN, max_position_embeddings=32)
    return DistilBertModel(DistilBertConfig(**{**cfg, **kw}))


def _vit(layers: int, **kw) -> nn.Module:
    from transformers import ViTConfig, ViTModel

    cfg = dict(
        image_size=IMAGE,
        patch_size=4,
        num_channels=3,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
    )
    return ViTModel(ViTConfig(**{**cfg, **kw}), add_pooling_layer=False)


def _gpt2(layers: int, **kw) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = dict(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=layers,
        n_head=HEADS,
        n_inner=FFN,
        n_positions=32,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
    )
    return GPT2LMHeadModel(GPT2Config(**{**cfg, **kw}))


def _llama(layers: int, **kw) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    # grouped-query attention, as LLaMA 2/3 have: 4 query heads on 2 key/value heads
    cfg = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=2 * HEADS,
        num_key_value_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(LlamaConfig(**{**cfg, **kw}))


#: name → (builder(layers, **config overrides), causal LM?, image input?)
BUILDERS: dict[str, tuple[Callable[..., nn.Module], bool, bool]] = {
    "bert": (_bert, False, False),
    "distilbert": (_distilbert, False, False),
    "vit": (_vit, False, True),
    "gpt2": (_gpt2, True, False),
    "llama": (_llama, True, False),
}


@dataclass
class HFExport:
    """What `export_hf` made: the wrapped torch module (eval mode), the example input and the ONNX file."""

    module: Wrap
    example: torch.Tensor
    path: Path


def build_hf(
    name: str, *, trained: bool = False, layers: int = 2, seed: int = 0, batch: int = 2, seq: int = SEQ, **config
) -> tuple[Wrap, torch.Tensor]:
    """The wrapped model (eval mode) from its tiny config and an example input.

    `trained` adds noise (std 0.02) to every parameter so that no two tensors are equal; `config` overrides
    fields of the model's config (e.g. intermediate_size=48).
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(BUILDERS)}")
    build, causal, image = BUILDERS[name]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(layers, **config)
    module = Wrap(model, causal).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    if trained:
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    if image:
        example = torch.randn(batch, 3, IMAGE, IMAGE, generator=gen)
    else:
        example = torch.randint(0, VOCAB, (batch, seq), generator=gen)
    return module, example


def export_hf(
    name: str,
    path: str | Path,
    exporter: str = "dynamo",
    *,
    trained: bool = False,
    layers: int = 2,
    seed: int = 0,
    batch: int = 2,
    seq: int = SEQ,
    opset: int | None = None,
    **config,
) -> HFExport:
    """Build `name` (see `build_hf`) and export it to `path` with `exporter` ("dynamo" or "torchscript").

    The input is named "x" and the output "y"; shapes are static (batch × seq as given). `opset` defaults to
    18 for dynamo and 17 for TorchScript.
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter {exporter!r}: expected dynamo or torchscript")
    module, example = build_hf(name, trained=trained, layers=layers, seed=seed, batch=batch, seq=seq, **config)
    path = Path(path)
    with (
        warnings.catch_warnings(),
        torch.no_grad(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                verbose=False,
                input_names=["x"],
                output_names=["y"],
                opset_version=opset or 18,
            )
            program.save(str(path))
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                opset_version=opset or 17,
            )
    return HFExport(module, example, path)
