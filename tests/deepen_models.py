"""Small torch models for the depth-growth tests (tests/test_deepen.py).

Every module is tiny so that both torch exporters finish quickly. `export` writes an ONNX file with the
TorchScript exporter (dynamo=False) or the dynamo exporter (dynamo=True).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leakyrelu": lambda: nn.LeakyReLU(0.1),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


class MLP(nn.Module):
    """Linear→act→Linear→act→Linear."""

    def __init__(self, act: str, sizes: tuple[int, ...] = (6, 8, 5, 3)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[act]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


class CNN(nn.Module):
    """Conv(→BN)→ReLU→MaxPool→Conv(→BN)→ReLU, global mean, Linear; for 1-, 2- or 3-D inputs."""

    def __init__(self, dims: int, bn: bool, c: tuple[int, int, int] = (2, 4, 5)) -> None:
        super().__init__()
        conv, norm, pool = _CONV[dims], _BN[dims], _POOL[dims]
        self.dims = dims
        self.features = nn.Sequential(
            conv(c[0], c[1], 3, padding=1, bias=not bn),
            *([norm(c[1])] if bn else []),
            nn.ReLU(),
            pool(2),
            conv(c[1], c[2], 3, padding=1, bias=not bn),
            *([norm(c[2])] if bn else []),
            nn.ReLU(),
        )
        self.fc = nn.Linear(c[2], 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        return self.fc(y.mean(dim=tuple(range(2, 2 + self.dims))))


def cnn_input(dims: int) -> tuple[int, ...]:
    return (2, 2) + {1: (12,), 2: (8, 8), 3: (4, 4, 4)}[dims]


class BasicBlock(nn.Module):
    """ResNet basic block with an identity shortcut: relu(bn2(conv2(relu(bn1(conv1 x)))) + x)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Bottleneck(nn.Module):
    """ResNet bottleneck block 1x1 → 3x3 → 1x1 with an identity shortcut."""

    def __init__(self, c: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + x)


class ResNet(nn.Module):
    """Stem, two basic blocks, one bottleneck block, global pooling, classifier."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(c), BasicBlock(c))
        self.layer2 = Bottleneck(c, 3)
        self.fc = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(x.mean((2, 3)))


RESNET_INPUT = (2, 3, 8, 8)


class Encoder(nn.Module):
    """Two nn.TransformerEncoderLayer (batch_first, no dropout) and a linear head."""

    def __init__(
        self,
        norm_first: bool,
        activation: str,
        d: int = 8,
        heads: int = 2,
        ff: int = 16,
        layers: int = 2,
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, heads, ff, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d) if final_norm else nn.Identity()  # pre-norm stacks end with one (GPT, ViT)
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


ENCODER_INPUT = (2, 5, 8)


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters (so BN is not an identity); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
    return module.eval()


def build(factory: Callable[[], nn.Module], shape: tuple[int, ...], seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    module = randomise(factory(), seed)
    return module, torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def export(
    module: nn.Module, example: torch.Tensor, path: str | Path, *, dynamo: bool = False, fold: bool = True
) -> Path:
    """Export with the TorchScript exporter (dynamo=False) or the dynamo exporter (dynamo=True).

    `fold=False` turns off constant folding (TorchScript exporter) so BatchNormalization nodes stay.
    """
    path = Path(path)
    module = module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # else eval encoders export as one fused aten op
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            _export(module, example, path, dynamo, fold)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return path


def _export(module: nn.Module, example: torch.Tensor, path: Path, dynamo: bool, fold: bool) -> None:
    if dynamo:
        program = torch.onnx.export(
            module, (example,), dynamo=True, verbose=False, input_names=["x"], output_names=["y"]
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
            opset_version=17,
            do_constant_folding=fold,
        )


#: name → (factory, example input shape, constant folding at export)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], bool]] = {
    **{f"mlp_{act}": ((lambda a=act: MLP(a)), (3, 6), True) for act in ACTIVATIONS},
    **{f"cnn{d}d": ((lambda d=d: CNN(d, False)), cnn_input(d), True) for d in (1, 2, 3)},
    # eval-mode BatchNorm is folded into the Conv when constants are folded, kept as a node otherwise
    **{f"cnn{d}d_bn": ((lambda d=d: CNN(d, True)), cnn_input(d), True) for d in (1, 2, 3)},
    **{f"cnn{d}d_bn_nofold": ((lambda d=d: CNN(d, True)), cnn_input(d), False) for d in (1, 2, 3)},
    "resnet": (ResNet, RESNET_INPUT, True),
    "resnet_nofold": (ResNet, RESNET_INPUT, False),
    **{
        f"encoder_{norm}_{act}": ((lambda n=norm, a=act: Encoder(n == "pre", a)), ENCODER_INPUT, True)
        for norm in ("pre", "post")
        for act in ("relu", "gelu")
    },
    "encoder_pre_gelu_final_norm": (lambda: Encoder(True, "gelu", final_norm=True), ENCODER_INPUT, True),
}


def export_named(name: str, path: str | Path, dynamo: bool) -> Path:
    factory, shape, fold = MODELS[name]
    module, example = build(factory, shape)
    return export(module, example, path, dynamo=dynamo, fold=fold)
