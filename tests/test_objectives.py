from __future__ import annotations

import pytest
import torch

from atlas.objectives import ClassActivation, FilterActivation, OtherClasses, class_loss, filter_loss
from tests.tiny import constant_image, linear_classifier

# logits = W @ mean(rgb) + b on a constant image (0.5, -1.0, 2.0):
W = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
B = [0.0, 0.0, -1.0, 0.0]
IMAGE = [0.5, -1.0, 2.0]
LOGITS = [0.5, -1.0, 1.0, 1.5]  # relu: 0.5, 0, 1.0, 1.5


def acts(image=IMAGE):
    clf = linear_classifier(W, B)
    return clf.forward(constant_image(image), layers=("pool",))


def test_logits_of_the_hand_set_classifier() -> None:
    torch.testing.assert_close(acts().logits, torch.tensor([LOGITS]))


def test_eq2_loss_is_minus_target_plus_lambda_times_the_others() -> None:
    # target 0: -relu(0.5) + 0.01 * (0 + 1.0 + 1.5)
    loss = class_loss([0])(acts())
    assert loss.item() == pytest.approx(-0.5 + 0.01 * 2.5)
    # target 1 has a negative logit: the ReLU makes its term 0
    assert class_loss([1])(acts()).item() == pytest.approx(0.01 * (0.5 + 1.0 + 1.5))
    # the raw-logit variant keeps the negative value (and so a gradient)
    assert class_loss([1], target_relu=False)(acts()).item() == pytest.approx(1.0 + 0.01 * 3.0)


def test_a_pair_sums_its_classes_and_penalises_all_the_others() -> None:
    loss = class_loss([2, 3])(acts())
    assert loss.item() == pytest.approx(-(1.0 + 1.5) + 0.01 * 0.5)


def test_sign_convention_minimising_raises_the_target() -> None:
    x = constant_image(IMAGE).requires_grad_(True)
    clf = linear_classifier(W, B)
    loss = class_loss([0])(clf.forward(x))
    loss.sum().backward()
    # d loss / d red channel: -1 (target) + 0.01 * (0 [class 2 uses blue] + 1 [class 3]) per pixel mean
    grad_red = x.grad[0, 0].sum().item()
    assert grad_red == pytest.approx(-1.0 + 0.01 * 1.0, rel=1e-5)


def test_filter_activation_is_the_spatial_mean_of_the_channel() -> None:
    a = acts()
    assert FilterActivation("pool", (2,))(a).item() == pytest.approx(2.0)
    assert filter_loss("pool", (0, 2))(a).item() == pytest.approx(-2.5)
    assert filter_loss("pool", (0,), penalty=0.1)(a).item() == pytest.approx(-0.5 + 0.1 * 3.0)


def test_objectives_combine_with_one_algebra() -> None:
    a = acts()
    combo = 2 * ClassActivation((3,)) - OtherClasses((3,)) + 1.0
    assert combo(a).item() == pytest.approx(2 * 1.5 - 1.5 + 1.0)
    assert (-ClassActivation((0,)))(a).item() == pytest.approx(-0.5)
    assert combo.needs_logits and not combo.layers
    mixed = ClassActivation((0,)) + FilterActivation("pool", (1,))
    assert mixed.layers == ("pool",)
    assert "a(3)" in combo.name


def test_filter_only_pass_stops_early() -> None:
    clf = linear_classifier(W, B)
    a = clf.forward(constant_image(IMAGE), layers=("pool",), need_logits=False)
    assert a.logits is None and a.features["pool"].shape == (1, 3, 1, 1)
    with pytest.raises(RuntimeError, match="needs D's logits"):
        class_loss([0])(a)
