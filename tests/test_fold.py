"""Folding D's BatchNorm layers into its convolutions (`atlas.fold`): the same function, fewer
operations, and no fold where it would change what a hooked layer or the network computes."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from atlas.classifier import load_classifier
from atlas.fold import conv_bn_pairs, fold_batchnorm


def _logits(model: nn.Module, size: int) -> torch.Tensor:
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize(("name", "size", "pairs"), [("efficientnet-lite0", 64, 49), ("torchvision:resnet18", 64, 20)])
def test_folded_classifiers_compute_what_they_did(name: str, size: int, pairs: int) -> None:
    clf = load_classifier(name, "random" if name.startswith("torchvision") else "default", seed=0)
    model = clf.model
    if name.startswith("torchvision"):  # random BatchNorm statistics, so that folding has something to fold
        gen = torch.Generator().manual_seed(0)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    before = _logits(model, size)
    assert fold_batchnorm(model, size) == pairs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    after = _logits(model, size)
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))
    assert not before.equal(torch.zeros_like(before))


def test_a_hooked_convolution_keeps_its_batchnorm() -> None:
    clf = load_classifier("efficientnet-lite0", "default")
    conv = "_blocks.4._depthwise_conv"
    seen: list[torch.Tensor] = []
    handle = clf.model.get_submodule(conv).register_forward_hook(lambda _m, _i, out: seen.append(out))
    _logits(clf.model, 64)
    clf.prepare(channels_last=False, compile=False, fold_bn=True, keep={conv})
    _logits(clf.model, 64)
    handle.remove()
    assert isinstance(clf.model.get_submodule("_blocks.4._bn1"), nn.BatchNorm2d)
    assert not isinstance(clf.model.get_submodule("_blocks.5._bn1"), nn.BatchNorm2d)
    # The kept layer returns what it returned before folding (the others were folded around it).
    assert torch.allclose(seen[-1], seen[0], atol=1e-5)


class _Shared(nn.Module):
    """A convolution whose output feeds its BatchNorm and, unnormalised, the head too: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head((self.bn(y) + y).mean(dim=(2, 3)))


def test_a_fold_that_would_change_the_function_is_undone() -> None:
    model = _Shared().eval()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.3)
        model.bn.running_var.fill_(4.0)
    before = _logits(model, 16)
    assert conv_bn_pairs(model, 16) == [("conv", "bn")]
    assert fold_batchnorm(model, 16) == 0
    assert isinstance(model.bn, nn.BatchNorm2d) and torch.equal(_logits(model, 16), before)


def test_only_eval_mode_folds() -> None:
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), bn=nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model, 16)
