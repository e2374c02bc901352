"""A small pre-norm GPT for byte-level language modelling (bench/worth_it_lm.py).

Token + learned position embeddings, `layers` pre-norm blocks (causal multi-head attention with separate
q/k/v/o projections, GELU feed-forward of width `ffn`), a final LayerNorm and an untied output head. Every
width is a constructor argument so onnxgrow's grown weights load into a bigger instance with
`onnxgrow.torch.state_dict_for`. Training runs attention through `scaled_dot_product_attention`; exports
write it out (q·kᵀ, mask, softmax, ·v) so onnxgrow sees the heads (`exporting()`); both compute the same.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, ctx: int, written_out: list[bool]) -> None:
        super().__init__()
        self.heads, self.written_out = heads, written_out
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        # a constant of the export (onnx2torch has no converter for Trilu), not part of the state_dict
        self.register_buffer("mask", torch.tril(torch.ones(ctx, ctx, dtype=torch.bool)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (p(x).view(b, s, self.heads, d // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
        if self.written_out[0]:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // self.heads))
            y = att.masked_fill(~self.mask[:s, :s], float("-inf")).softmax(-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, s, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, ctx: int, written_out: list[bool]) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, ctx, written_out)
        self.fc, self.proj = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Byte-level pre-norm GPT: `d` hidden, `layers` blocks, `heads` heads, feed-forward `ffn` (default 4·d)."""

    def __init__(self, d: int, layers: int, heads: int, ctx: int, vocab: int = 256, ffn: int | None = None) -> None:
        super().__init__()
        self.d, self.n_layers, self.n_heads, self.ctx, self.vocab = d, layers, heads, ctx, vocab
        self.ffn = ffn or 4 * d
        self._written_out = [False]  # shared with every Attention: write attention out for an export
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads, self.ffn, ctx, self._written_out) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        for name, p in self.named_parameters():  # GPT-2's initialisation
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("o.weight", "proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))

    @contextlib.contextmanager
    def exporting(self) -> Iterator[None]:
        """Attention written out with MatMul/Softmax (what an ONNX export should see) inside the block."""
        self._written_out[0] = True
        try:
            yield
        finally:
            self._written_out[0] = False

    def matmul_weights(self) -> int:
        """Weights multiplied in each token's forward pass: every block's Linear layers and the head."""
        return self.n_layers * (4 * self.d * self.d + 2 * self.d * self.ffn) + self.d * self.vocab

    def train_flops_per_token(self) -> int:
        """Training FLOPs per token: 3 × forward (backward ≈ 2 × forward), forward = 2 × matmul weights
        (a multiply and an add each) + attention 2 × 2 × layers × ctx × d (q·kᵀ and ·v over the whole
        context, as the written-out attention computes them). Embedding lookups, norms, biases and
        activations are left out (a few % of the total at these sizes)."""
        return 3 * (2 * self.matmul_weights() + 4 * self.n_layers * self.ctx * self.d)
