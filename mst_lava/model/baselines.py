"""QCFS baselines the paper also masks: ResNet-18 and VGG-16, for small inputs (CIFAR style).

Every activation is a QCFS site named ``act`` whose ``block`` is the index of the conv /
linear layer it follows, in forward order, so each (site, block) pair — the RSM mask key —
is unique:

* ResNet-18: 0 = stem conv; residual block k (0..7) has its inner activation at 2k+1 and
  its output activation (after the residual add) at 2k+2 → blocks 0..16.
  ``--mask act=0.5`` masks every block, ``--mask act@5=0.5`` one of them.
* VGG-16: the 13 conv layers are blocks 0..12; with ``hidden > 0`` the two hidden
  linear layers of the classifier are blocks 13 and 14.

Inputs are small images (e.g. 28×28 grayscale, 32×32 RGB, 8×8 digits). The stem is a
3×3 stride-1 conv without max-pooling; VGG uses 2×2 *average* pooling (max pooling does not
convert to IF neurons), skipped once the map is 1×1; both end with global average pooling.
Named in ``mst_lava.model.ARCHS`` as ``"resnet18"`` and ``"vgg16"`` (built by :func:`baseline_from_config`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from mst_lava.errors import MSTError
from mst_lava.model.mst import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_LEVELS,
    MAX_SIDE,
    check_field_types,
    check_range,
    config_from_dict,
)
from mst_lava.model.qcfs import QCFS

VGG16_LAYERS = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")


@dataclass
class BaselineConfig:
    arch: str = "resnet18"          # "resnet18" or "vgg16"
    img_size: int = 32
    in_chans: int = 3
    num_classes: int = 10
    width: int = 64                 # channels of the first stage; all widths scale with it
    hidden: int = 4096              # VGG-16 classifier hidden width (0: a single linear head)
    L: int = 16
    lam_init: float = 3.0
    preset: str = field(default="custom")

    def __post_init__(self):
        check_field_types(self)
        if self.arch not in ("resnet18", "vgg16"):
            raise MSTError(f"config: unknown baseline arch {self.arch!r} (resnet18 or vgg16)")
        check_range(self, "img_size", 1, MAX_SIDE)
        check_range(self, "in_chans", 1, MAX_CHANNELS)
        check_range(self, "num_classes", 1, MAX_CLASSES)
        check_range(self, "width", 1, MAX_CHANNELS // 8)     # the last stage is 8 × width wide
        check_range(self, "hidden", 0, MAX_CHANNELS)
        check_range(self, "L", 1, MAX_LEVELS)
        check_range(self, "lam_init", 0.0, 1e6, low_open=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BaselineConfig":
        return config_from_dict(cls, d, "baseline config")


# Fields a baseline checkpoint's config must give (as mst.REQUIRED_IN_CHECKPOINT; all of them were written
# since baselines exist). Not required: arch (the checkpoint's own 'arch' entry), lam_init and preset.
REQUIRED_IN_CHECKPOINT = ("img_size", "in_chans", "num_classes", "width", "hidden", "L")


BASELINE_PRESETS: dict[str, dict] = {
    "digits": dict(img_size=8, in_chans=1, num_classes=10, width=16, hidden=0),
    "fmnist": dict(img_size=28, in_chans=1, num_classes=10, width=32, hidden=0),
    "cifar": dict(img_size=32, in_chans=3, num_classes=10, width=64, hidden=4096),
}


def _conv_bn(cin: int, cout: int, k: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    """conv3×3-BN-QCFS-conv3×3-BN (+ shortcut) → QCFS; sites ``act`` at 2k+1 and 2k+2."""

    def __init__(self, cin: int, cout: int, stride: int, k: int, cfg: BaselineConfig):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.act1 = QCFS("act", 2 * k + 1, cfg.L, cfg.lam_init)
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3, 1)
        if stride != 1 or cin != cout:
            conv, bn = _conv_bn(cin, cout, 1, stride)
            self.shortcut = nn.Sequential(conv, bn)
        else:
            self.shortcut = nn.Identity()
        self.act2 = QCFS("act", 2 * k + 2, cfg.L, cfg.lam_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act2(y + self.shortcut(x))


class QCFSResNet18(nn.Module):
    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.conv1, self.bn1 = _conv_bn(cfg.in_chans, w, 3, 1)
        self.act1 = QCFS("act", 0, cfg.L, cfg.lam_init)
        blocks, cin, k = [], w, 0
        for s, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            for i in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if (s > 0 and i == 0) else 1, k, cfg))
                cin, k = cout, k + 1
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, cfg.num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class QCFSVGG16(nn.Module):
    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin, size, idx = cfg.in_chans, cfg.img_size, 0
        for v in VGG16_LAYERS:
            if v == "P":
                if size >= 2:
                    layers.append(nn.AvgPool2d(2, 2))
                    size //= 2
                continue
            cout = max(1, v * cfg.width // 64)
            conv, bn = _conv_bn(cin, cout, 3, 1)
            layers += [conv, bn, QCFS("act", idx, cfg.L, cfg.lam_init)]
            cin, idx = cout, idx + 1
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        if cfg.hidden:
            h = cfg.hidden
            self.classifier = nn.Sequential(
                nn.Linear(cin, h), QCFS("act", idx, cfg.L, cfg.lam_init),
                nn.Linear(h, h), QCFS("act", idx + 1, cfg.L, cfg.lam_init),
                nn.Linear(h, cfg.num_classes))
        else:
            self.classifier = nn.Sequential(nn.Linear(cin, cfg.num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


def build_baseline(arch: str = "resnet18", preset: str | None = None, **overrides) -> nn.Module:
    """A QCFS ResNet-18 or VGG-16; ``preset`` in digits/fmnist/cifar sets input size and widths."""
    d = {"arch": arch}
    if preset is not None:
        if preset not in BASELINE_PRESETS:
            raise MSTError(f"unknown baseline preset {preset!r}; choose from {', '.join(BASELINE_PRESETS)}")
        d.update(BASELINE_PRESETS[preset], preset=preset)
    d.update(overrides)
    return baseline_from_config(arch, d)


def baseline_from_config(arch: str, d: dict) -> nn.Module:
    """A QCFS ResNet-18 (``arch`` "resnet18") or VGG-16 ("vgg16") from a checkpoint's config dict."""
    d = dict(d)
    if d.setdefault("arch", arch) != arch:
        raise MSTError(f"config names arch {d['arch']!r} but {arch!r} was asked for")
    cfg = BaselineConfig.from_dict(d)
    return QCFSResNet18(cfg) if arch == "resnet18" else QCFSVGG16(cfg)

