"""Small transformers in torch, for the transformer-growth tests (tests/test_transformers.py).

- `encoder`: nn.TransformerEncoderLayer ×2 (pre- or post-norm, relu or gelu), batch_first, after a token embedding.
- `gpt`: a GPT-style decoder: token + learned position embeddings, causal self-attention written out
  (Linear q/k/v, view into heads, masked softmax), GELU MLP, final LayerNorm, output head tied to the
  token embedding.
- `llama`: LLaMA-style blocks: RMSNorm written out, attention without biases, SwiGLU feed-forward;
  `llama-rope` adds rotary position embeddings, `llama-gqa` also grouped-query attention (4 query heads,
  2 key/value heads), `llama-mqa` multi-query attention (2 query heads, 1 key/value head).

Every model is tiny (hidden 8-16, 2 heads) so both torch exporters finish in seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch_models import export as export_model

VOCAB = 23


class Encoder(nn.Module):
    """Token embedding, two nn.TransformerEncoderLayer (batch_first, no dropout), a linear head on the first
    token (or, with `hidden_out`, the last hidden state itself as the output, as feature extractors do)."""

    def __init__(
        self,
        norm_first: bool,
        activation: str,
        d: int = 8,
        heads: int = 2,
        ff: int = 16,
        layers: int = 2,
        hidden_out: bool = False,
    ) -> None:
        super().__init__()
        self.hidden_out = hidden_out
        self.embed = nn.Embedding(VOCAB, d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, heads, ff, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
            )
            for _ in range(layers)
        )
        self.head = nn.Linear(d, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return x if self.hidden_out else self.head(x[:, 0])


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask, heads split with view() as GPT-2/nanoGPT do."""

    def __init__(self, d: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q = nn.Linear(d, d, bias=bias)
        self.k = nn.Linear(d, d, bias=bias)
        self.v = nn.Linear(d, d, bias=bias)
        self.o = nn.Linear(d, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        mask = torch.tril(torch.ones(s, s, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, self.heads * self.head_dim)
        return self.o(y)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class RopeAttention(CausalSelfAttention):
    """LLaMA attention: rotary position embeddings on q and k, no biases, optionally fewer key/value heads
    than query heads (grouped-query attention: each k/v head repeated for its group with repeat_interleave)."""

    def __init__(self, d: int, heads: int, kv_heads: int | None = None, seq: int = 6) -> None:
        super().__init__(d, heads, bias=False)
        self.kv_heads = kv_heads or heads
        self.k = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        freqs = torch.outer(torch.arange(seq).float(), inv)
        self.register_buffer("cos", torch.cat((freqs, freqs), -1).cos())
        self.register_buffer("sin", torch.cat((freqs, freqs), -1).sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * self.cos + _rotate_half(q) * self.sin, k * self.cos + _rotate_half(k) * self.sin
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        att = att.masked_fill(~torch.tril(torch.ones(s, s, dtype=torch.bool)), float("-inf")).softmax(-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, s, self.heads * self.head_dim))


class GPTBlock(nn.Module):
    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads)
        self.fc, self.proj = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Token + position embeddings, pre-norm blocks, final LayerNorm, logits tied to the token embedding."""

    def __init__(self, d: int = 8, heads: int = 2, ff: int = 16, layers: int = 2, seq: int = 6) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(GPTBlock(d, heads, ff) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, VOCAB, bias=False)
        self.lm_head.weight = self.tok.weight  # tied input/output embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1])
        x = self.tok(ids) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln(x))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LlamaBlock(nn.Module):
    """RMSNorm → attention (no biases) → residual; RMSNorm → SwiGLU (silu(gate) * up → down) → residual.

    `rope`: rotary position embeddings in the attention; `kv_heads`: grouped-query attention."""

    def __init__(self, d: int, heads: int, ff: int, rope: bool = False, kv_heads: int | None = None) -> None:
        super().__init__()
        self.n1, self.n2 = RMSNorm(d), RMSNorm(d)
        self.attn = RopeAttention(d, heads, kv_heads) if rope else CausalSelfAttention(d, heads, bias=False)
        self.gate = nn.Linear(d, ff, bias=False)
        self.up = nn.Linear(d, ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.down(F.silu(self.gate(self.n2(x))) * self.up(self.n2(x)))


class Llama(nn.Module):
    def __init__(
        self, d: int = 8, heads: int = 2, ff: int = 12, layers: int = 2, rope: bool = False, kv_heads: int | None = None
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.blocks = nn.ModuleList(LlamaBlock(d, heads, ff, rope, kv_heads) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, 3, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm weights and biases so that every parameter matters to the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if (
                name.endswith("bias")
                or "norm" in name
                or ".ln" in name
                or name.startswith("ln")
                or ".n1" in name
                or ".n2" in name
            ):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if "weight" in name else 0.0))
    return module.eval()


MODELS = {
    "encoder-post-relu": lambda: Encoder(False, "relu"),
    "encoder-post-gelu": lambda: Encoder(False, "gelu"),
    "encoder-pre-relu": lambda: Encoder(True, "relu"),
    "encoder-pre-gelu": lambda: Encoder(True, "gelu"),
    "encoder-hidden-out": lambda: Encoder(True, "gelu", hidden_out=True),
    "gpt": GPT,
    "llama": Llama,
    "llama-rope": lambda: Llama(rope=True),
    "llama-gqa": lambda: Llama(heads=4, rope=True, kv_heads=2),
    "llama-mqa": lambda: Llama(rope=True, kv_heads=1),
}


def build(name: str, seed: int = 0, batch: int = 2, seq: int = 6) -> tuple[nn.Module, torch.Tensor]:
    """The model in eval mode with non-trivial norms and biases, and example token ids (batch × seq)."""
    torch.manual_seed(seed)
    module = randomise(MODELS[name](), seed)
    return module, torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def export(
    module: nn.Module, example: torch.Tensor, path: str | Path, dynamo: bool, dynamic_batch: bool = False
) -> Path:
    """torch_models.export (TorchScript at opset 17, or dynamo) with the fused encoder fast path turned off."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # else eval encoders export as one fused aten op
    try:
        return export_model(module.eval(), example, path, dynamo, dynamic_batch)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
