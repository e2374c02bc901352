"""Hugging Face `transformers` models from tiny configs (nothing downloaded), with trained-like weights,
exported by either torch exporter: for the keep-your-own-class tests (tests/test_keep_class.py).

- `bert`: BertForSequenceClassification (post-norm, learned positions, token types, pooler + classifier).
- `gpt2`: GPT2LMHeadModel (pre-norm, packed q|k|v Conv1D, learned positions, logits tied to the token
  embedding unless `tie=False`).
- `llama`: LlamaForCausalLM with grouped-query attention (4 query heads, 2 key/value heads), rotary position
  embeddings, RMSNorm, SwiGLU.
- `vit`: ViTForImageClassification (patch Conv, class token, learned positions).

Every model has 2 layers and hidden size 32 so both exporters finish in seconds. `build(kind, **sizes)`
makes the same class at other sizes (the bigger instance a grown model loads into).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

VOCAB = 61
SEQ = 8
IMAGE = 16
KINDS = ("bert", "gpt2", "llama", "vit")
#: the exporters each kind exports with: TorchScript fails on GPT-2's and LLaMA's aten::diff (transformers'
#: mask code, when no attention mask is given), so those two are exported by dynamo only
EXPORTERS = {
    "bert": ("torchscript", "dynamo"),
    "gpt2": ("dynamo",),
    "llama": ("dynamo",),
    "vit": ("torchscript", "dynamo"),
}


def config(
    kind: str,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 64,
    layers: int = 2,
    tie: bool = True,
    head_dim: int = 8,
):
    """The tiny transformers config of `kind`; `heads` counts query heads (LLaMA: `kv_heads` key/value heads of
    `head_dim`; the other classes' head size is hidden / heads)."""
    import transformers as tf

    common = dict(attn_implementation="eager")
    if kind == "bert":
        cfg = tf.BertConfig(
            vocab_size=VOCAB,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=SEQ * 2,
            type_vocab_size=2,
            num_labels=3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **common,
        )
    elif kind == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=VOCAB,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_inner=ffn,
            n_positions=SEQ * 2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
            tie_word_embeddings=tie,
            bos_token_id=0,
            eos_token_id=0,
            **common,
        )
    elif kind == "llama":
        cfg = tf.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=hidden,
            intermediate_size=ffn,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            max_position_embeddings=SEQ * 2,
            head_dim=head_dim,
            use_cache=False,
            tie_word_embeddings=False,
            **common,
        )
    elif kind == "vit":
        cfg = tf.ViTConfig(
            image_size=IMAGE,
            patch_size=4,
            num_channels=3,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            num_labels=3,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **common,
        )
    else:
        raise ValueError(kind)
    return cfg


def model_class(kind: str):
    import transformers as tf

    return {
        "bert": tf.BertForSequenceClassification,
        "gpt2": tf.GPT2LMHeadModel,
        "llama": tf.LlamaForCausalLM,
        "vit": tf.ViTForImageClassification,
    }[kind]


def build(kind: str, seed: int = 0, noise: float = 0.02, **sizes) -> nn.Module:
    """`model_class(kind)(config(kind, **sizes))` in eval mode; with `noise`, every parameter moved by a little
    noise so that no two weights are equal (trained-like: the exporters deduplicate equal initializers)."""
    torch.manual_seed(seed)
    model = model_class(kind)(config(kind, **sizes)).eval()
    if noise:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * noise)
    return model


def example(kind: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Token ids (batch x SEQ) or images (batch x 3 x IMAGE x IMAGE)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "vit":
        return torch.randn(batch, 3, IMAGE, IMAGE, generator=g)
    return torch.randint(0, VOCAB, (batch, SEQ), generator=g)


def export(model: nn.Module, kind: str, path: str | Path, exporter: str) -> Path:
    """Export the model itself (its first input: token ids or pixel values) with static shapes (batch 2), as
    a user would; the output is `logits`."""
    path = Path(path)
    wrapped = model.eval()
    x = example(kind)
    with (
        warnings.catch_warnings(),
        torch.no_grad(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(
                wrapped, (x,), dynamo=True, verbose=False, input_names=["x"], output_names=["logits"]
            ).save(str(path))
        else:
            torch.onnx.export(
                wrapped, (x,), str(path), dynamo=False, input_names=["x"], output_names=["logits"], opset_version=17
            )
    return path
