"""A narrow ResNet with BatchNorm on CIFAR-shaped images (3 x 32 x 32, 10 classes), trained with
the built-in crop_flip augmentation and SGD with Nesterov momentum on a cosine schedule
(cifar_resnet.yaml). The images are synthetic, so the example runs anywhere: each class is a
smooth colour pattern drawn once, shown at a random shift, mirrored half the time, under noise;
a shift and a mirror are what crop_flip draws, so the augmentation helps here as on CIFAR.
To train on real CIFAR-10, return torchvision's images from `load` instead (a sketch in
docs/workloads.md). Nothing here comes from the harness.

    harness run --config examples/cifar_resnet.yaml
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a shortcut (a 1x1 convolution where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, width: int, blocks: int, classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            for j in range(blocks):
                stages.append(Block(cin, cout, 2 if i > 0 and j == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def build(options: dict) -> nn.Module:
    return ResNet(options["width"], options["blocks"], options["classes"])


def load(options: dict) -> dict:
    """{"train", "val", "test"}: (examples, 3, size, size) float images, (examples,) labels."""
    generator = torch.Generator().manual_seed(options.get("data_seed", 0))
    size, classes = options["size"], options["classes"]
    coarse = torch.randn(classes, 3, 4, 4, generator=generator)
    patterns = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, classes, (n,), generator=generator)
        images = patterns[labels]
        shifts = torch.randint(-3, 4, (n, 2), generator=generator)
        images = torch.stack([img.roll(tuple(s.tolist()), dims=(1, 2)) for img, s in zip(images, shifts)])
        mirrored = torch.rand(n, generator=generator) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(3), images)
        return images + options["noise"] * torch.randn(images.shape, generator=generator), labels

    return {"train": split(options["train"]), "val": split(options["val"]), "test": split(options["test"])}
