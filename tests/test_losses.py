import math

import pytest
import torch
import torch.nn.functional as F

from stepdistill import losses

torch.manual_seed(0)


def _logits(k):
    return torch.randn(6, k, dtype=torch.float64) * 3


@pytest.mark.parametrize("k", [1, 4])
def test_hard_label_loss_is_cross_entropy(k):
    z, y = _logits(k), torch.randint(0, max(k, 2), (6,))
    expected = (
        F.binary_cross_entropy_with_logits(z.squeeze(-1), y.double(), reduction="none")
        if k == 1
        else F.cross_entropy(z, y, reduction="none")
    )
    torch.testing.assert_close(losses.hard_label_loss(z, y), expected)


def test_binary_soft_target_equals_two_class_softmax_kl():
    s, t = _logits(1), _logits(1)
    two = lambda z: torch.cat([torch.zeros_like(z), z], -1)  # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]
    torch.testing.assert_close(losses.soft_target_kl(s, t, 2.0), losses.soft_target_kl(two(s), two(t), 2.0))


def test_soft_target_kl_hand_computed_with_t_squared():
    # p_t = sigmoid(0) = 0.5, p_s = sigmoid(2/2) = 0.731; T^2 * KL = 4 * (0.5 ln(0.5/0.731) + 0.5 ln(0.5/0.269))
    p_s = 1 / (1 + math.exp(-1))
    expected = 4 * (0.5 * math.log(0.5 / p_s) + 0.5 * math.log(0.5 / (1 - p_s)))
    value = losses.soft_target_kl(torch.tensor([[2.0]]), torch.tensor([[0.0]]), 2.0)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_soft_target_kl_is_zero_only_at_teacher_and_stable_for_huge_logits():
    t = _logits(3)
    assert losses.soft_target_kl(t, t, 3.0).abs().max() < 1e-12
    huge = torch.tensor([[1e4, -1e4, 0.0]])
    assert torch.isfinite(losses.soft_target_kl(-huge, huge, 1.0)).all()
    assert torch.isfinite(losses.hard_label_loss(torch.tensor([[-1e4]]), torch.tensor([1]))).all()


def test_cosine_margin_makes_small_differences_free():
    teacher = torch.tensor([[1.0, 0.0]])
    close = torch.tensor([[1.0, 0.3]])  # cos = 0.958: inside a 0.1 margin
    far = torch.tensor([[0.0, 1.0]])  # cos = 0
    assert losses.rationale_cosine(close, teacher, margin=0.1).item() == 0.0
    assert losses.rationale_cosine(close, teacher).item() == pytest.approx(1 - 1 / math.sqrt(1.09), rel=1e-6)
    assert losses.rationale_cosine(far, teacher, margin=0.1).item() == pytest.approx(0.9)
    assert losses.rationale_cosine_grad(close, teacher, margin=0.1).abs().max() == 0.0


def test_consistency_gets_no_gradient_through_the_clean_side():
    clean = _logits(3).requires_grad_()
    perturbed = _logits(3).requires_grad_()
    losses.consistency_kl(clean, perturbed).sum().backward()
    assert clean.grad is None and perturbed.grad.abs().sum() > 0


CASES = {
    "hard": (lambda s, t, y: losses.hard_label_loss(s, y), lambda s, t, y: losses.hard_label_loss_grad(s, y)),
    "soft": (lambda s, t, y: losses.soft_target_kl(s, t, 2.5), lambda s, t, y: losses.soft_target_kl_grad(s, t, 2.5)),
    "consistency": (lambda s, t, y: losses.consistency_kl(t, s), lambda s, t, y: losses.consistency_kl_grad(t, s)),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("k", [1, 3])
def test_logit_gradients_match_autograd(name, k):
    value, grad = CASES[name]
    s = _logits(k).requires_grad_()
    t, y = _logits(k), torch.randint(0, max(k, 2), (6,))
    value(s, t, y).sum().backward()
    torch.testing.assert_close(grad(s.detach(), t, y), s.grad)


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.5])
def test_rationale_gradients_match_autograd(margin):
    s = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 5, dtype=torch.float64)
    t[:3] = s.detach()[:3] * 2 + 0.01  # some rows inside the margin
    losses.rationale_cosine(s, t, margin).sum().backward()
    torch.testing.assert_close(losses.rationale_cosine_grad(s.detach(), t, margin), s.grad)
    s.grad = None
    losses.rationale_mse(s, t).sum().backward()
    torch.testing.assert_close(losses.rationale_mse_grad(s.detach(), t), s.grad)


def test_stacked_leading_dimensions_are_free():
    s, t = torch.randn(3, 7, 4), torch.randn(3, 7, 4)
    y = torch.randint(0, 4, (3, 7))
    assert losses.soft_target_kl(s, t, 2.0).shape == (3, 7)
    assert losses.hard_label_loss(s, y).shape == (3, 7)
    torch.testing.assert_close(losses.hard_label_loss(s, y)[1], losses.hard_label_loss(s[1], y[1]))


def test_cosine_gradient_stays_bounded_for_a_student_near_zero():
    teacher = torch.tensor([[3.0, 4.0]])  # |teacher| = 5, so the student's norm floor is 0.5
    tiny = torch.tensor([[1e-9, 0.0]], requires_grad=True)
    losses.rationale_cosine(tiny, teacher).sum().backward()
    grad = losses.rationale_cosine_grad(tiny.detach(), teacher)
    torch.testing.assert_close(grad, tiny.grad)
    # d(1 - a.b / (0.5 * 5)) / da = -b / 2.5
    torch.testing.assert_close(grad, -teacher / 2.5)
    assert losses.rationale_cosine(torch.zeros(1, 2), teacher).item() == pytest.approx(1.0)
