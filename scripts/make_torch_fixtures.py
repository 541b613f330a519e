"""Write the small PyTorch checkpoints that test the torch-free reader (zoo/torch_checkpoint.py).

Run once, with real torch, outside the project's environment (torch is never a dependency):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch numpy      # the CPU wheel is enough
    /tmp/torchvenv/bin/python scripts/make_torch_fixtures.py tests/fixtures/torch

It writes, each in torch's zip format (`<name>_zip.pth`, the default since torch 1.6) and in
the legacy format (`<name>_legacy.pth`, `_use_new_zipfile_serialization=False`, what torch
<= 1.5 wrote, e.g. ReActNet's 2020 checkpoints):

- `tensors`: a flat dict of tensors exercising the storage layouts: non-contiguous views
  (a transpose, a strided slice), views at an offset sharing one storage, a 0-d tensor,
  float16 / bfloat16 / int64 / int32 / bool dtypes, an `nn.Parameter`, ReActNet-A's
  flat `(N, 1)` binary weights;
- `checkpoint`: what ReActNet's `train.py` saves, `{"epoch", "state_dict", "best_top1_acc",
  "optimizer"}`, from a small module wrapped in `nn.DataParallel` (keys prefixed `module.`)
  after one Adam step;

and `expected.npz`, the same tensors as NumPy arrays (keys `<fixture>/<key>`, written by
torch's own `.numpy()`), plus `versions.txt` (the torch that wrote them).
"""

from __future__ import annotations

import collections
import os
import sys

import numpy as np
import torch


def tensors() -> dict:
    torch.manual_seed(0)
    base = torch.arange(20, dtype=torch.float32) * 0.5 - 3.0  # one storage, several views
    grid = torch.randn(3, 5)
    return collections.OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, 3)),
            ("transposed", grid.t()),  # strides (1, 5): not contiguous
            ("offset_slice", base[7:13]),  # storage offset 7
            ("strided_view", base.view(4, 5)[1:, ::2]),  # offset 5, strides (5, 2)
            ("whole_base", base),
            ("scalar", torch.tensor(65.9)),
            ("num_batches_tracked", torch.tensor(1234, dtype=torch.int64)),
            ("int32", torch.tensor([[-7, 0], [3, 2**31 - 1]], dtype=torch.int32)),
            ("half", torch.tensor([0.5, -2.0, 65504.0], dtype=torch.float16)),
            ("bfloat16", torch.tensor([1.5, -0.25, 3.0e38], dtype=torch.bfloat16)),
            ("mask", torch.tensor([True, False, True])),
            ("parameter", torch.nn.Parameter(torch.randn(3))),
            ("binary_pw.weights", torch.rand(2 * 3 * 1 * 1, 1) * 0.001),
        ]
    )


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.prelu = torch.nn.PReLU(4)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


def checkpoint() -> dict:
    torch.manual_seed(1)
    model = torch.nn.DataParallel(_Tiny())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model(torch.randn(2, 3, 8, 8)).square().mean()
    loss.backward()
    optimizer.step()
    return {
        "epoch": 7,
        "state_dict": model.state_dict(),
        "best_top1_acc": torch.tensor(65.9),
        "optimizer": optimizer.state_dict(),
    }


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy()
    return tensor.numpy().copy()


def main(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    expected = {}
    for name, obj in (("tensors", tensors()), ("checkpoint", checkpoint())):
        torch.save(obj, os.path.join(out_dir, f"{name}_zip.pth"))
        torch.save(
            obj,
            os.path.join(out_dir, f"{name}_legacy.pth"),
            _use_new_zipfile_serialization=False,
        )
        flat = obj if name == "tensors" else obj["state_dict"]
        for key, tensor in flat.items():
            expected[f"{name}/{key}"] = as_numpy(tensor)
        if name == "checkpoint":
            expected["checkpoint/best_top1_acc"] = as_numpy(obj["best_top1_acc"])
            exp_avg = obj["optimizer"]["state"][0]["exp_avg"]
            expected["checkpoint/optimizer/state/0/exp_avg"] = as_numpy(exp_avg)
    np.savez(os.path.join(out_dir, "expected.npz"), **expected)
    with open(os.path.join(out_dir, "versions.txt"), "w") as file:
        file.write(f"torch {torch.__version__}\nnumpy {np.__version__}\n")
    for entry in sorted(os.listdir(out_dir)):
        print(f"{os.path.getsize(os.path.join(out_dir, entry)):>7} {entry}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures", "torch"))
