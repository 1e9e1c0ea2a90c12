"""A user's own 10-class model, as `python:user_model:ten_classes` names it (the tests put this
folder on PYTHONPATH): a small conv net whose function Atlas calls with no arguments."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def ten_classes() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, stride=2, padding=1),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(8, 16, 3, stride=2, padding=1),
            act2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(16, 10),
        )
    )


def not_a_model() -> str:
    return "a model"
