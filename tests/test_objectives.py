from __future__ import annotations

import pytest
import torch

from atlas.objectives import (
    ChunkLoss,
    ClassActivation,
    FilterActivation,
    Objective,
    OtherClasses,
    class_loss,
    filter_loss,
    target_objective,
)
from tests.tiny import constant_image, linear_classifier, tiny_classifier

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


def _chunk_objectives():
    from atlas.targets import Target

    targets = [
        Target("class", (1,)),
        Target("class", (4,)),
        Target("pair", (2, 3)),
        Target("filter", layer="conv", channels=(2,)),
        Target("filter", layer="conv", channels=(0, 3)),
    ]
    objs = [target_objective(t, 0.01, True) for t in targets]
    objs += [
        class_loss([5], target_relu=False),  # the raw logit, which passes a gradient below 0
        class_loss([0], penalty=0.0),
        filter_loss("conv", (1,), penalty=0.1),
        2 * ClassActivation((3,)) - OtherClasses((3,)) + 1.0,
    ]
    return objs


def test_a_chunks_losses_batched_are_each_objective_alone_with_the_same_gradient_bits() -> None:
    clf = tiny_classifier()
    objs = _chunk_objectives()
    batched = ChunkLoss(objs)
    assert batched.forms is not None  # every objective Atlas builds has a linear form
    alone = ChunkLoss(objs)
    alone.forms = None  # the per-image path
    x = torch.randn(len(objs), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    grads, losses = [], []
    for loss_fn in (batched, alone):
        xi = x.clone().requires_grad_(True)
        acts = clf.forward(xi, layers=loss_fn.layers, need_logits=loss_fn.needs_logits)
        loss = loss_fn(acts)
        loss.sum().backward()
        losses.append(loss.detach())
        grads.append(xi.grad)
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-6)
    assert torch.equal(grads[0], grads[1])  # the same coefficients: the optimiser takes the same steps


def test_a_chunk_loss_reads_no_entry_its_target_does_not_weigh() -> None:
    # An inf logit of a class that a filter target does not weigh leaves its loss finite, as the
    # filter's own computation would; the class target that weighs it sees it.
    acts_ = acts()
    acts_.logits[0, 2] = float("inf")
    acts_.features["pool"] = acts_.features["pool"].clone()
    loss = ChunkLoss([filter_loss("pool", (0,)), class_loss([0])])(
        type(acts_)(logits=acts_.logits.expand(2, -1), features={"pool": acts_.features["pool"].expand(2, -1, -1, -1)})
    )
    assert torch.isfinite(loss[0]) and loss[0].item() == pytest.approx(-0.5)
    assert not torch.isfinite(loss[1])


def test_an_objective_without_a_linear_form_is_computed_per_image() -> None:
    class Squared(Objective):
        needs_logits = True

        def __call__(self, a):
            return a.logits[:, 0] ** 2

    objs = [Squared(), class_loss([0])]
    assert Squared().linear() is None and (Squared() + class_loss([1])).linear() is None
    loss_fn = ChunkLoss(objs)
    assert loss_fn.forms is None
    a = acts()
    two = type(a)(logits=a.logits.expand(2, -1), features={})
    torch.testing.assert_close(loss_fn(two), torch.tensor([0.25, -0.5 + 0.01 * 2.5]))
