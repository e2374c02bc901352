"""Hugging Face models from tiny configs, exported to ONNX the way users do (nothing is downloaded)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

VOCAB = 50


class Wrapped(torch.nn.Module):
    """A transformers model returning one tensor (its output dataclass cannot be exported)."""

    def __init__(self, model: torch.nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kwargs = {"use_cache": False} if self.key == "logits" else {}
        return getattr(self.model(x, **kwargs), self.key)


def build_hf(name: str, *, trained: bool = False, layers: int = 2, hidden: int = 32, heads: int | None = None,
             seed: int = 0) -> tuple[Wrapped, tuple[torch.Tensor, ...]]:
    """A tiny `name` (bert, vit, gpt2, llama) with fresh weights, or trained-like ones (small noise on every
    parameter, so no two tensors are equal), and example inputs. LLaMA has 4 query heads on 2 key/value heads
    (grouped-query attention); the others 2 heads."""
    import transformers as tf

    heads = heads or (4 if name == "llama" else 2)

    torch.manual_seed(seed)
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=2 * hidden)
    ids = (torch.randint(0, VOCAB, (2, 16)),)
    if name == "bert":
        model, key, args = tf.BertModel(tf.BertConfig(vocab_size=VOCAB, max_position_embeddings=32, **common)), \
            "last_hidden_state", ids
    elif name == "vit":
        cfg = tf.ViTConfig(image_size=16, patch_size=4, num_channels=3, **common)
        model, key, args = tf.ViTModel(cfg), "last_hidden_state", (torch.randn(2, 3, 16, 16),)
    elif name == "gpt2":
        cfg = tf.GPT2Config(vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=32)
        model, key, args = tf.GPT2LMHeadModel(cfg), "logits", ids
    elif name == "llama":
        cfg = tf.LlamaConfig(vocab_size=VOCAB, max_position_embeddings=32, num_key_value_heads=max(1, heads // 2),
                             **common)
        model, key, args = tf.LlamaForCausalLM(cfg), "logits", ids
    else:
        raise ValueError(name)
    if trained:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return Wrapped(model.eval(), key), args


def export_hf(name: str, path: str | Path, *, exporter: str = "dynamo", trained: bool = False,
              **kwargs) -> Wrapped:
    """Build `name` (see build_hf) and export it to `path` with torch's dynamo or TorchScript exporter."""
    module, args = build_hf(name, trained=trained, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=exporter == "dynamo", input_names=["x"],
                          opset_version=18 if exporter == "dynamo" else 17)
    return module
