"""Loss functions on logits and rationale vectors, in log space.

Shapes. Logits are ``(..., K)``: ``K == 1`` is a binary task with one logit (p(class 1) =
sigmoid(z)), ``K >= 3`` a multi-class task (softmax). Leading dimensions ``...`` are free: a
batch ``(B,)`` or a stack of students ``(S, B)``. Labels are int64 ``(...)``. Rationales are
``(..., R)`` vectors. Every loss returns the per-sample value ``(...)``; callers average (or
weight) over samples.

Each loss has a ``*_grad`` companion: the closed-form derivative of the per-sample value with
respect to the student's input (logits or rationale). The linear engine trains logistic students
with these instead of autograd, which is several times faster for small models; the tests check
every one against autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COSINE_EPS = 1e-8
# A student rationale shorter than this share of the teacher's counts as this long (see rationale_cosine).
STUDENT_NORM_FLOOR = 0.1


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``(..., K) -> (..., C)`` class log-probabilities; C = 2 for a binary logit, else K."""
    if logits.shape[-1] == 1:
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=-1)
    return F.log_softmax(logits, dim=-1)


def probs(logits: torch.Tensor) -> torch.Tensor:
    """``(..., K) -> (..., K)``: sigmoid for one binary logit, softmax otherwise.

    This is the logit-space form whose derivative rules are shared by both cases:
    d CE / d z = probs(z) - target(y).
    """
    return torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1)


def label_target(y: torch.Tensor, n_logits: int) -> torch.Tensor:
    """``(...) -> (..., K)``: y itself for one binary logit, one-hot for K classes."""
    if n_logits == 1:
        return y.unsqueeze(-1).to(torch.float32)
    return F.one_hot(y, n_logits).to(torch.float32)


# --- hard labels -----------------------------------------------------------------------------


def hard_label_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the true labels: ``-log p(y | x)``; BCE for a binary logit."""
    return -log_probs(logits).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def hard_label_loss_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return probs(logits) - label_target(y, logits.shape[-1])


# --- soft targets (Hinton et al. 2015) -------------------------------------------------------


def soft_target_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(p_teacher^T || p_student^T)`` with both distributions softened by T: ``(..., K)``
    logits -> ``(...)``. The one KL of the package: the soft term of tabular students, the
    consistency term (``consistency_kl``) and, over a vocabulary, the token-level distillation of
    generative students (``(N, V)`` logits at N target tokens).

    The T^2 factor keeps the gradient scale independent of T, so that the soft term's weight
    means the same thing at any temperature. The teacher's distribution is a fixed target: no
    gradient flows into ``teacher_logits``.
    """
    log_p_teacher = log_probs(teacher_logits.detach() / temperature)
    log_p_student = log_probs(student_logits / temperature)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return temperature**2 * kl


def soft_target_kl_grad(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    return temperature * (probs(student_logits / temperature) - probs(teacher_logits / temperature))


# --- consistency -----------------------------------------------------------------------------


def consistency_kl(clean_logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p(x) || p(x + e))``: the student's prediction on a perturbed input should match its
    prediction on the clean one. The clean side is the target and gets no gradient (as in
    consistency training, so the term cannot be lowered by blurring the clean prediction)."""
    return soft_target_kl(perturbed_logits, clean_logits, 1.0)


def consistency_kl_grad(clean_logits: torch.Tensor, perturbed_logits: torch.Tensor) -> torch.Tensor:
    """Derivative with respect to ``perturbed_logits``."""
    return probs(perturbed_logits) - probs(clean_logits)


# --- rationale -------------------------------------------------------------------------------


def rationale_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the R rationale components: ``(..., R) -> (...)``."""
    return (student - teacher).pow(2).mean(-1)


def rationale_mse_grad(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return 2.0 * (student - teacher) / student.shape[-1]


def rationale_cosine(student: torch.Tensor, teacher: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """``max(0, 1 - cos(student, teacher) - margin)``.

    With margin 0 this is ``1 - cos``. With margin m > 0, directions within ``cos >= 1 - m`` of the
    teacher's cost nothing: the student is free to differ that much. (A cosine-embedding loss with
    target +1 has no margin at all; this is the working form.)

    The student's norm is floored at ``STUDENT_NORM_FLOOR`` times the teacher's: a vector near zero
    (a freshly initialized linear student's contributions) has no direction, and the exact cosine's
    gradient there grows like 1/|student|, which wrecks an optimizer's statistics. With the floor,
    such a student gets a bounded pull toward the teacher's direction; at any usual length the
    cosine is exact.
    """
    return torch.clamp_min(1.0 - _cosine(student, teacher) - margin, 0.0)


def rationale_cosine_grad(student: torch.Tensor, teacher: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    student_length = student.norm(dim=-1, keepdim=True)
    teacher_norm = teacher.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)
    floor = (STUDENT_NORM_FLOOR * teacher_norm).clamp_min(COSINE_EPS)
    student_norm = torch.maximum(student_length, floor)
    cos = (student * teacher).sum(-1, keepdim=True) / (student_norm * teacher_norm)
    # d cos / d student; the norm's own derivative only where the floor is not in force
    d_cos = teacher / (student_norm * teacher_norm) - (student_length > floor) * cos * student / student_norm**2
    active = (1.0 - cos - margin) > 0
    return -d_cos * active


def _cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    teacher_norm = teacher.norm(dim=-1).clamp_min(COSINE_EPS)
    student_norm = torch.maximum(student.norm(dim=-1), (STUDENT_NORM_FLOOR * teacher_norm).clamp_min(COSINE_EPS))
    return (student * teacher).sum(-1) / (student_norm * teacher_norm)
