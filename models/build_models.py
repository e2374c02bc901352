"""Build the small example models shipped in models/ (run: python models/build_models.py).

Weights come from a fixed seed, so the files are reproducible. Needs the `torch` extra.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class MLP(nn.Module):
    """784 → 64 → 32 → 10 with ReLU: the simplest thing to widen."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 64), nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class ResCNN(nn.Module):
    """Conv-BN-ReLU stem, one residual basic block, global pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = torch.relu(x + y)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class TinyEncoder(nn.Module):
    """Embedding + one post-norm transformer encoder layer (hidden 32, 4 heads, FFN 64) + classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        self.layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.cls = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.cls(self.layer(self.embed(ids)).mean(dim=1))


class TinyGPT(nn.Module):
    """GPT-style decoder: token + position embeddings, 2 pre-norm layers (hidden 32, 4 heads written out with
    view(), causal mask, GELU FFN 64), final LayerNorm, logits tied to the token embedding."""

    def __init__(self, vocab: int = 100, d: int = 32, heads: int = 4, ff: int = 64, seq: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.ln1 = nn.ModuleList(nn.LayerNorm(d) for _ in range(2))
        self.qkv = nn.ModuleList(nn.Linear(d, 3 * d) for _ in range(2))
        self.proj = nn.ModuleList(nn.Linear(d, d) for _ in range(2))
        self.ln2 = nn.ModuleList(nn.LayerNorm(d) for _ in range(2))
        self.fc = nn.ModuleList(nn.Linear(d, ff) for _ in range(2))
        self.out = nn.ModuleList(nn.Linear(ff, d) for _ in range(2))
        self.ln = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.tok.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, s = ids.shape
        x = self.tok(ids) + self.pos(torch.arange(s))
        mask = torch.tril(torch.ones(s, s, dtype=torch.bool))
        for i in range(2):
            q, k, v = self.qkv[i](self.ln1[i](x)).split(x.shape[-1], dim=-1)
            q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            x = x + self.proj[i]((att @ v).transpose(1, 2).reshape(b, s, -1))
            x = x + self.out[i](nn.functional.gelu(self.fc[i](self.ln2[i](x))))
        return self.lm_head(self.ln(x))


def _randomise_norms(model: nn.Module) -> None:
    """Trained-looking LayerNorm scales and shifts (else torch merges the equal ones into one initializer)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _randomise_bn(model: nn.Module) -> None:
    """Give BatchNorm layers trained-looking statistics instead of the identity defaults."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def build(out: Path = HERE) -> list[Path]:
    torch.manual_seed(0)
    made = []
    specs = [
        ("mlp.onnx", MLP(), torch.randn(1, 784), ["x"], {"x": {0: "batch"}}),
        ("cnn.onnx", ResCNN(), torch.randn(1, 3, 32, 32), ["x"], {"x": {0: "batch"}}),
        ("encoder.onnx", TinyEncoder(), torch.randint(0, 100, (1, 8)), ["ids"], {"ids": {0: "batch"}}),
        ("gpt.onnx", TinyGPT(), torch.randint(0, 100, (1, 8)), ["ids"], {"ids": {0: "batch"}}),
    ]
    for name, model, example, inputs, dyn in specs:
        _randomise_bn(model)
        if isinstance(model, TinyGPT):
            _randomise_norms(model)
        model.eval()
        path = out / name
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=inputs,
            output_names=["logits"],
            dynamic_axes={**dyn, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        made.append(path)
    return made


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(f"{p.name}: {p.stat().st_size} bytes")
