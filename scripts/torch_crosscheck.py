"""Cross-check the ReActNet import against real torch, end to end, at 224x224 (optional).

The test suite proves the importer against an independent NumPy reference
(tests/reactnet_reference.py) and never needs torch. This script adds the check against
PyTorch itself, in two steps and two environments (torch is never a project dependency):

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    /tmp/torchvenv/bin/python scripts/torch_crosscheck.py torch /tmp/crosscheck
    .venv/bin/python scripts/torch_crosscheck.py zoo /tmp/crosscheck

Step `torch` builds ReActNet-18 and ReActNet-A in PyTorch as the official code defines them
(github.com/liuzechun/ReActNet, `resnet/2_step2/birealnet.py`, `mobilenet/2_step2/
reactnet.py`; the modules are re-written here, in eval mode, with the official parameter
names), gives them random weights and BatchNorm statistics, saves each as ReActNet's
`train.py` does (`{"epoch", "state_dict", "best_top1_acc", "optimizer"}`, `nn.DataParallel`,
torch's legacy format as torch 1.4 wrote it), checks tests/reactnet_reference.py against
them in float64, and stores torch's float32 logits for random images. Step `zoo` converts
the checkpoints with `larq-dysign import-reactnet` into a cache of its own, loads the four
models with `weights="imagenet"`, and prints the largest logit difference per image.

Expect most images to match to ~1e-5; an image whose pre-sign value lies within float32
rounding of its threshold flips one bit and differs more (see docs/weights.md), and any
exactly-zero binary weight (which the importer reports) differs by torch.sign(0) = 0.
"""
# ruff: noqa: I001

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NETWORKS = {"ReActNet18": ("ReActNet18", "DyResNet18"), "ReActNetA": ("ReActNetA", "DyMobileNet")}
IMAGES = 8


def _torch_step(out: str) -> None:
    import torch
    from torch import nn
    from torch.nn import functional as F

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import reactnet_reference as ref

    class LearnableBias(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

        def forward(self, x):
            return x + self.bias

    class HardBinaryConv(nn.Module):  # eval mode: sign weights, per-output-channel scale
        def __init__(self, cin, cout, k=3, stride=1, padding=1, flat=False):
            super().__init__()
            self.stride, self.padding, self.shape, self.flat = (
                stride,
                padding,
                (cout, cin, k, k),
                flat,
            )
            if flat:  # ReActNet-A: HardBinaryConv.weights, (O*I*k*k, 1)
                self.weights = nn.Parameter(torch.rand(cout * cin * k * k, 1) * 1e-3)
            else:  # ReActNet-18: .weight, OIHW
                self.weight = nn.Parameter(torch.rand(cout, cin, k, k) * 1e-3)

        def forward(self, x):
            w = self.weights.view(self.shape) if self.flat else self.weight
            scale = w.abs().mean(dim=(1, 2, 3)).reshape(1, -1, 1, 1)
            return F.conv2d(x, torch.sign(w), stride=self.stride, padding=self.padding) * scale

    class Block18(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.move0 = LearnableBias(cin)
            self.binary_conv = HardBinaryConv(cin, cout, stride=stride)
            self.bn1 = nn.BatchNorm2d(cout)
            self.move1, self.prelu, self.move2 = (
                LearnableBias(cout),
                nn.PReLU(cout),
                LearnableBias(cout),
            )
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.AvgPool2d(2, stride),
                    nn.Conv2d(cin, cout, 1, bias=False),
                    nn.BatchNorm2d(cout),
                )

        def forward(self, x):
            out = self.bn1(self.binary_conv(torch.sign(self.move0(x))))
            out = out + (x if self.downsample is None else self.downsample(x))
            return self.move2(self.prelu(self.move1(out)))

    class ReActNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for stage, cout in enumerate(ref.RESNET_WIDTHS, start=1):
                blocks = []
                for block in range(ref.RESNET_BLOCKS):
                    blocks.append(Block18(cin, cout, 2 if stage > 1 and block == 0 else 1))
                    cin = cout
                setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            x = self.maxpool(self.bn1(self.conv1(x)))
            for stage in range(1, 5):
                x = getattr(self, f"layer{stage}")(x)
            return self.fc(x.mean((2, 3)))

    class BlockA(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.move11 = LearnableBias(cin)
            self.binary_3x3 = HardBinaryConv(cin, cin, 3, stride, 1, flat=True)
            self.bn1 = nn.BatchNorm2d(cin)
            self.move12, self.prelu1, self.move13 = (
                LearnableBias(cin),
                nn.PReLU(cin),
                LearnableBias(cin),
            )
            self.move21 = LearnableBias(cin)
            if cin == cout:
                self.binary_pw = HardBinaryConv(cin, cout, 1, 1, 0, flat=True)
                self.bn2 = nn.BatchNorm2d(cout)
            else:
                self.binary_pw_down1 = HardBinaryConv(cin, cin, 1, 1, 0, flat=True)
                self.binary_pw_down2 = HardBinaryConv(cin, cin, 1, 1, 0, flat=True)
                self.bn2_1, self.bn2_2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cin)
            self.move22, self.prelu2, self.move23 = (
                LearnableBias(cout),
                nn.PReLU(cout),
                LearnableBias(cout),
            )
            self.same, self.stride = cin == cout, stride
            self.pooling = nn.AvgPool2d(2, 2)

        def forward(self, x):
            out1 = self.bn1(self.binary_3x3(torch.sign(self.move11(x))))
            if self.stride == 2:
                x = self.pooling(x)
            out1 = self.move13(self.prelu1(self.move12(x + out1)))
            out2 = torch.sign(self.move21(out1))
            if self.same:
                out2 = self.bn2(self.binary_pw(out2)) + out1
            else:
                a = self.bn2_1(self.binary_pw_down1(out2)) + out1
                b = self.bn2_2(self.binary_pw_down2(out2)) + out1
                out2 = torch.cat([a, b], 1)
            return self.move23(self.prelu2(self.move22(out2)))

    class FirstConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(32)

        def forward(self, x):
            return self.bn1(self.conv1(x))

    class ReActNetA(nn.Module):
        def __init__(self):
            super().__init__()
            w = ref.MOBILENET_WIDTHS
            self.feature = nn.ModuleList(
                [FirstConv()]
                + [
                    BlockA(w[i - 1], w[i], 2 if w[i - 1] != w[i] and w[i] != 64 else 1)
                    for i in range(1, len(w))
                ]
            )
            self.fc = nn.Linear(1024, 1000)

        def forward(self, x):
            for block in self.feature:
                x = block(x)
            return self.fc(x.mean((2, 3)))

    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name, module in (("ReActNet18", ReActNet18), ("ReActNetA", ReActNetA)):
        net = module().eval()
        with torch.no_grad():  # what a trained network has: nothing at its initial value
            for key, p in net.named_parameters():
                if "move" in key:
                    p.normal_(0, 0.1)
                elif "prelu" in key:
                    p.uniform_(0.05, 0.45)
                elif "binary" in key:  # torch's normal_ gives a few exact zeros in 28M
                    p.normal_(0, 0.05)
                    p[p == 0] = 1e-4  # (torch.sign(0) = 0: see the module docstring)
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.2)
        state = {k: v.double().numpy() for k, v in net.state_dict().items()}
        x64 = np.random.default_rng(2).normal(size=(2, 64, 64, 3))
        with torch.no_grad():
            t64 = net.double()(torch.from_numpy(np.transpose(x64, (0, 3, 1, 2)))).numpy()
        net.float()
        diff = np.abs(t64 - ref.FORWARDS[name](state, x64)).max()
        print(
            f"{name}: tests/reactnet_reference.py vs torch (float64, 64x64): max |diff| {diff:.1e}"
        )
        parallel = nn.DataParallel(net)
        checkpoint = {
            "epoch": 255,
            "state_dict": parallel.state_dict(),
            "best_top1_acc": torch.tensor(0.0),
            "optimizer": torch.optim.Adam(parallel.parameters()).state_dict(),
        }
        path = os.path.join(out, f"{name}.pth.tar")
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
        images = np.random.default_rng(1).normal(size=(IMAGES, 3, 224, 224)).astype(np.float32)
        with torch.no_grad():
            logits = net(torch.from_numpy(images)).numpy()
        np.savez(
            os.path.join(out, f"{name}_torch.npz"),
            images=np.transpose(images, (0, 2, 3, 1)),
            logits=logits,
        )
        print(f"{name}: wrote {path} and torch's logits for {IMAGES} images")


def _zoo_step(out: str) -> None:
    cache = os.path.join(out, "cache")
    os.environ["LARQ_DYSIGN_CACHE_DIR"] = cache
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import larq_dysign  # noqa: F401  (Keras 2 before tensorflow)
    import tensorflow as tf

    from larq_dysign import zoo

    for official, models in NETWORKS.items():
        subprocess.run(
            [
                os.path.join(os.path.dirname(sys.executable), "larq-dysign"),
                "import-reactnet",
                os.path.join(out, f"{official}.pth.tar"),
                "--model",
                official,
            ],
            check=True,
        )
        data = np.load(os.path.join(out, f"{official}_torch.npz"))
        for name in models:
            model = zoo.get_model(name, weights="imagenet")
            head = tf.keras.Model(model.inputs, model.get_layer("logits").output)
            logits = head(data["images"], training=False).numpy()
            per_image = np.abs(logits - data["logits"]).max(axis=1)
            print(
                f"{name}: max |Keras - torch| per image "
                + " ".join(f"{v:.1e}" for v in per_image)
                + f" (logits up to {np.abs(data['logits']).max():.1f}); argmax agreement "
                f"{np.mean(logits.argmax(1) == data['logits'].argmax(1)):.0%}"
            )


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("torch", "zoo"):
        sys.exit(f"usage: {sys.argv[0]} torch|zoo OUT_DIR")
    (_torch_step if sys.argv[1] == "torch" else _zoo_step)(sys.argv[2])
