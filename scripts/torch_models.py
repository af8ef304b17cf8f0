"""PyTorch twins of cugrad's model builders, shared by tests/golden/make_golden.py (golden files)
and bench/compare_torch.py (timings), so that both build exactly the network cugrad builds.

    reference_cnn(width, classes)     DESIGN.md's reference network (cugrad's nn::ReferenceCnn):
                                      an nn.Sequential, entries named 0 ... 19 as cugrad's `f`
    two_conv_cnn(image_size, classes) the Net of PyTorch's MNIST example (pytorch/examples
                                      mnist/main.py) without its log_softmax (cugrad's
                                      nn::TwoConvCnn): fc1 takes 64 * ((image_size - 4) // 2) ** 2
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def reference_cnn(width=64, classes=10):
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    w = width
    layers = block(1, w) + block(w, w) + [nn.MaxPool2d(2)] + block(w, 2 * w) + block(2 * w, 2 * w)
    layers += [nn.MaxPool2d(2)] + block(2 * w, 4 * w) + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, classes)]
    return nn.Sequential(*layers)


class TwoConvCnn(nn.Module):
    def __init__(self, image_size=28, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(64 * ((image_size - 4) // 2) ** 2, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = torch.flatten(self.dropout1(x), 1)
        return self.fc2(self.dropout2(F.relu(self.fc1(x))))


def two_conv_cnn(image_size=28, classes=10):
    return TwoConvCnn(image_size, classes)
