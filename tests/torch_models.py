"""Small real architectures built in torch, for the width-growth tests (tests/test_widen_torch.py).

Every module is tiny (a few channels, 8x8 images) so that both torch exporters finish quickly.
`build(name)` returns (module in eval mode with non-trivial BatchNorm statistics, example input).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class VGG(nn.Module):
    """Conv→ReLU→MaxPool twice, Flatten, Linear→ReLU→Linear: one channel becomes H·W Gemm columns."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(8 * 2 * 2, 10), nn.ReLU(), nn.Linear(10, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """ResNet basic block with a strided 1x1 conv + BN downsample shortcut."""

    def __init__(self, cin: int = 4, cout: int = 6, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout)
        self.relu = nn.ReLU()
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1 → 3x3 → 1x1 ×expansion) with a downsample shortcut."""

    def __init__(self, cin: int = 4, width: int = 3, expansion: int = 2, stride: int = 2) -> None:
        super().__init__()
        cout = width * expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        self.relu = nn.ReLU()
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class ResNetHead(nn.Module):
    """A block followed by global pooling and a classifier, as in torchvision's ResNet."""

    def __init__(self, block: nn.Module, channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), _bn(4), nn.ReLU())
        self.block = block
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


class DenseNet(nn.Module):
    """Two dense layers: each sees the concatenation of all earlier features (BN→ReLU→Conv)."""

    def __init__(self, c0: int = 4, growth: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c0, 3, padding=1)
        self.layer1 = nn.Sequential(_bn(c0), nn.ReLU(), nn.Conv2d(c0, growth, 3, padding=1, bias=False))
        self.layer2 = nn.Sequential(
            _bn(c0 + growth), nn.ReLU(), nn.Conv2d(c0 + growth, growth, 3, padding=1, bias=False)
        )
        c = c0 + 2 * growth
        self.transition = nn.Sequential(_bn(c), nn.ReLU(), nn.Conv2d(c, 5, 1), nn.AvgPool2d(2))
        self.fc = nn.Linear(5 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.stem(x)
        x1 = torch.cat([x0, self.layer1(x0)], 1)
        x2 = torch.cat([x1, self.layer2(x1)], 1)
        return self.fc(torch.flatten(self.transition(x2), 1))


class Inception(nn.Module):
    """Four parallel branches (1x1, 1x1→3x3, 1x1→5x5, pool→1x1) concatenated, then a 1x1 conv."""

    def __init__(self, cin: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, cin, 3, padding=1), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(cin, 2, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(cin, 3, 1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, 2, 1), nn.ReLU(), nn.Conv2d(2, 3, 5, padding=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, 2, 1), nn.ReLU())
        self.head = nn.Conv2d(2 + 4 + 3 + 2, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)
        return self.head(y).mean((2, 3))


class MobileNetSE(nn.Module):
    """MobileNet depthwise separable block with squeeze-and-excitation (V3 style)."""

    def __init__(self, c: int = 4, se: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), _bn(c), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), _bn(c), nn.ReLU())
        self.se_pool = nn.AdaptiveAvgPool2d(1)
        self.se_fc1 = nn.Conv2d(c, se, 1)
        self.se_fc2 = nn.Conv2d(se, c, 1)
        self.pw = nn.Sequential(nn.Conv2d(c, 6, 1, bias=False), _bn(6), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.stem(x))
        s = torch.sigmoid(self.se_fc2(torch.relu(self.se_fc1(self.se_pool(x)))))
        x = self.pw(x * s)
        return self.fc(torch.flatten(self.pool(x), 1))


class ResNeXt(nn.Module):
    """ResNeXt-style 1x1 → grouped 3x3 (groups=4) → 1x1 with an identity residual."""

    def __init__(self, c: int = 6, width: int = 8, groups: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), _bn(c), nn.ReLU())
        self.conv1 = nn.Conv2d(c, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, c, 1, bias=False)
        self.bn3 = _bn(c)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.relu(self.bn3(self.conv3(out)) + x)
        return self.fc(out.mean((2, 3)))


class AlexNetLRN(nn.Module):
    """AlexNet-style Conv→ReLU→LRN→MaxPool, then Conv→ReLU and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.lrn = nn.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.lrn(torch.relu(self.conv1(x))))
        x = torch.relu(self.conv2(x))
        return self.fc(x.view(x.size(0), 5 * 4 * 4))  # old torchvision style: the size is a constant


class PReLUDepthMultiplier(nn.Module):
    """Conv→BN→PReLU(C) (slope C×1×1 in ONNX) → depthwise conv with a channel multiplier of 2."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.bn = _bn(c)
        self.prelu = nn.PReLU(c)
        self.dw = nn.Conv2d(c, 2 * c, 3, padding=1, groups=c)
        self.out = nn.Conv2d(2 * c, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.dw(self.prelu(self.bn(self.conv(x)))))
        return self.out(x).mean((2, 3))


class UNet(nn.Module):
    """Encoder conv, strided conv, ConvTranspose and nearest Upsample back, skip concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 3, 2, stride=2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(4 + 3, 2, 1)
        self.side = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.relu(self.enc(x))
        d = torch.relu(self.down(e))
        return self.head(torch.cat([e, self.up(d)], 1)) + self.side(self.upsample(d))


class FFNLayerNorm(nn.Module):
    """Transformer-style post-norm feed-forward block on (batch, seq, dim): MatMul, GELU, LayerNorm."""

    def __init__(self, d: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(5, d)
        self.ff1 = nn.Linear(d, hidden)
        self.ff2 = nn.Linear(hidden, d)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = self.norm(h + self.ff2(nn.functional.gelu(self.ff1(h))))
        return self.out(h)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: view(n, g, c/g, h, w).transpose(1, 2) splits the channel axis."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.out(y).mean((2, 3))


class GroupNormNet(nn.Module):
    """GroupNorm(2, 4): torch exports it as Reshape → InstanceNormalization → Reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.norm = nn.GroupNorm(2, 4)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.norm(self.conv(x)))).mean((2, 3))


ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "relu": lambda c: nn.ReLU(),
    "leakyrelu": lambda c: nn.LeakyReLU(0.1),
    "prelu": lambda c: nn.PReLU(c),
    "sigmoid": lambda c: nn.Sigmoid(),
    "tanh": lambda c: nn.Tanh(),
    "hardsigmoid": lambda c: nn.Hardsigmoid(),
    "hardswish": lambda c: nn.Hardswish(),
    "elu": lambda c: nn.ELU(),
    "selu": lambda c: nn.SELU(),
    "softplus": lambda c: nn.Softplus(),
    "gelu": lambda c: nn.GELU(),
    "gelu_tanh": lambda c: nn.GELU(approximate="tanh"),
    "silu": lambda c: nn.SiLU(),
    "relu6": lambda c: nn.ReLU6(),
}


class MLP(nn.Module):
    """Linear→act→Linear→act→Linear: two hidden groups, each passing through the activation."""

    def __init__(self, act: str, sizes: tuple[int, ...] = (6, 5, 7, 3)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[act](sizes[i + 1]))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


IMAGE = (2, 3, 8, 8)

#: name → (factory, example input shape)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "vgg": (VGG, IMAGE),
    "resnet_basic": (lambda: ResNetHead(BasicBlock(4, 6), 6), IMAGE),
    "resnet_bottleneck": (lambda: ResNetHead(Bottleneck(4, 3, 2), 6), IMAGE),
    "densenet": (DenseNet, IMAGE),
    "inception": (Inception, IMAGE),
    "mobilenet_se": (MobileNetSE, IMAGE),
    "resnext": (ResNeXt, IMAGE),
    "alexnet_lrn": (AlexNetLRN, IMAGE),
    "prelu_depth_multiplier": (PReLUDepthMultiplier, IMAGE),
    "unet": (UNet, IMAGE),
    "ffn_layernorm": (FFNLayerNorm, (2, 4, 5)),
    "channel_shuffle": (ChannelShuffle, (2, 3, 4, 4)),
    "groupnorm": (GroupNormNet, (2, 3, 4, 4)),
    **{f"mlp_{act}": ((lambda a=act: MLP(a)), (3, 6)) for act in ACTIVATIONS},
}


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers random statistics and affine parameters (so BN is not an identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
    return module.eval()


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    factory, shape = MODELS[name]
    torch.manual_seed(seed)
    module = randomise(factory(), seed)
    return module, torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def export(
    module: nn.Module, example: torch.Tensor, path: str | Path, dynamo: bool, dynamic_batch: bool = False
) -> Path:
    """Export with the TorchScript exporter (dynamo=False) or the dynamo exporter (dynamo=True).

    `dynamic_batch` makes the first axis of the input and output dynamic, as most real exports do.
    """
    path = Path(path)
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                verbose=False,
                dynamic_shapes=shapes,
                input_names=["x"],
                output_names=["y"],
            )
            program.save(str(path))
        else:
            axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                opset_version=17,
                dynamic_axes=axes,
            )
    return path
