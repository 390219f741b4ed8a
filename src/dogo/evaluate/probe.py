"""The linear probe on frozen features (docs/reference.md §5, with the reference's bugs fixed).

The ``linear`` protocol (:mod:`dogo.evaluate.linear`) and the probe protocols (fewshot, noisy,
transfer, shift) fit it; its settings are :class:`~dogo.config.probe.ProbeSettings`.

One ``Linear(d, classes)`` on the un-normalised pooled features; Adam lr 3e-4, weight decay 1e-6,
batch 64, 100 epochs (options: SGD with momentum 0.9, a cosine schedule); 15 % of the training
split held out for validation; the weights of the epoch with the best validation accuracy are
scored on the test split. Fixed here: the split has its own ``torch.Generator(seed)`` (not the
global seed), validation accuracy is correct/total of the validation images, and the test
score counts every test image (no dropped last batch, no mean of per-batch means).

Speed: the epochs run on feature tensors (``randperm`` + slicing, no DataLoader) and the step
is written out: the softmax cross-entropy gradient ``(softmax(xW^T + b) - onehot(y)) / B`` and
PyTorch's Adam / SGD update (L2 weight decay added to the gradient, on the bias too, as
``torch.optim.Adam(model.parameters(), weight_decay=...)`` does). That is about 3x faster than
autograd + ``torch.optim`` on small batches and gives the same numbers (tested).
``solver="lbfgs"`` instead fits scikit-learn's ``LogisticRegression`` on standardised features.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from dogo.config.probe import ProbeSettings
from dogo.evaluate.base import generator

__all__ = [
    "LinearProbe",
    "ProbeFit",
    "ProbeSettings",
    "accuracy",
    "fit_probe",
    "fit_with_holdout",
    "holdout_split",
    "probe_numbers",
]


@dataclass
class LinearProbe:
    """``logits = ((x - mean) / scale) @ weight.T + bias`` (mean 0 / scale 1 when not standardised)."""

    weight: torch.Tensor  # C x d
    bias: torch.Tensor  # C
    mean: torch.Tensor  # d
    scale: torch.Tensor  # d

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.to(self.weight.device) - self.mean) / self.scale
        return torch.addmm(self.bias, x, self.weight.t())

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor, chunk: int = 65536) -> float:
        """Top-1 accuracy in percent: correct / total over every row."""
        if len(labels) == 0:
            return float("nan")
        correct = 0
        for start in range(0, len(labels), chunk):
            pred = self.logits(features[start : start + chunk]).argmax(1).cpu()
            correct += int((pred == labels[start : start + chunk].cpu()).sum())
        return 100.0 * correct / len(labels)


@dataclass
class ProbeFit:
    """A trained probe and how it was chosen (``best_epoch`` is None for lbfgs)."""

    probe: LinearProbe
    best_val_top1: float | None
    best_epoch: int | None
    val_curve: list[float] = field(default_factory=list)
    num_train: int = 0
    num_val: int = 0
    train_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent: correct / total."""
    return 100.0 * float((logits.argmax(1).cpu() == labels.cpu()).float().mean())


def holdout_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): a random ``round(val_fraction * n)`` held out.

    Drawn from ``torch.Generator`` seeded by ``seed`` alone (the reference used the global seed).
    """
    perm = torch.randperm(n, generator=generator(seed, "holdout"))
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    return perm[n_val:], perm[:n_val]


class _Optimizer:
    """PyTorch's Adam / SGD update, in place on one tensor, from a given gradient."""

    def __init__(self, param: torch.Tensor, settings: ProbeSettings) -> None:
        self.param, self.s = param, settings
        self.step_count = 0
        self.buf = torch.zeros_like(param)  # Adam: first moment; SGD: momentum buffer
        self.sq = torch.zeros_like(param) if settings.solver == "adam" else None

    def step(self, grad: torch.Tensor, lr: float) -> None:
        s, p = self.s, self.param
        if s.weight_decay:
            grad.add_(p, alpha=s.weight_decay)
        self.step_count += 1
        if self.sq is not None:  # Adam (betas 0.9, 0.999; eps 1e-8 outside the root)
            b1, b2 = 0.9, 0.999
            self.buf.lerp_(grad, 1 - b1)
            self.sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (self.sq / (1 - b2**self.step_count)).sqrt_().add_(1e-8)
            p.addcdiv_(self.buf, denom, value=-lr / (1 - b1**self.step_count))
        else:  # SGD, dampening 0, no Nesterov: buf = momentum * buf + grad (buf = grad at first)
            if self.step_count == 1 or s.momentum == 0:
                self.buf.copy_(grad)
            else:
                self.buf.mul_(s.momentum).add_(grad)
            p.add_(self.buf, alpha=-lr)


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_ones(len(x), 1)], 1)


def fit_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings,
    *,
    val_x: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> ProbeFit:
    """Train a linear head on features ``train_x`` (N x d) with labels ``train_y`` (N).

    With a validation set, the weights of the epoch with the best validation accuracy are kept
    (the earliest on ties); without one, those of the last epoch. ``seed`` (default
    ``settings.seed``) seeds the initialisation (PyTorch's ``nn.Linear`` default: U(+-1/sqrt(d)))
    and the per-epoch shuffles.
    """
    started = time.perf_counter()
    seed = settings.seed if seed is None else seed
    train_x = train_x.float().to(device)
    train_y = train_y.long().to(device)
    if settings.standardize or settings.solver == "lbfgs":
        mean = train_x.mean(0)
        scale = train_x.std(0, unbiased=False).clamp_min(1e-6)
        x = (train_x - mean) / scale
    else:
        mean = train_x.new_zeros(train_x.shape[1])
        scale = train_x.new_ones(train_x.shape[1])
        x = train_x
    vx: torch.Tensor | None = None
    vy: torch.Tensor | None = None
    if val_x is not None and val_y is not None and len(val_y) > 0:
        vx = (val_x.float().to(device) - mean) / scale
        vy = val_y.long().to(device)

    with _one_thread():
        if settings.solver == "lbfgs":
            return _fit_lbfgs(x, train_y, num_classes, settings, vx, vy, mean, scale, started)
        return _fit_gradient(x, train_y, num_classes, settings, vx, vy, mean, scale, seed, started)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the probe's CPU work on one thread (torch and BLAS; restored after).

    A batch-64 step is far too small to split across threads, and on a busy 2-core machine the
    idle workers' spin-waiting made the Adam probe 4-5x and the L-BFGS fit 10x slower
    (measured). Feature extraction, the expensive part, keeps all threads.
    """
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def _fit_gradient(
    x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings,
    vx: torch.Tensor | None,
    vy: torch.Tensor | None,
    mean: torch.Tensor,
    scale: torch.Tensor,
    seed: int,
    started: float,
) -> ProbeFit:
    """Adam / SGD epochs over ``x`` (already standardised if asked), best-validation weights."""
    device = x.device
    has_val = vx is not None
    n, d = x.shape
    g = generator(seed, "probe")
    bound = 1.0 / math.sqrt(d)
    wb = torch.empty(num_classes, d + 1).uniform_(-bound, bound, generator=g).to(device)
    opt = _Optimizer(wb, settings)
    x1 = _with_ones(x)
    vx1 = _with_ones(vx) if vx is not None else None
    onehot = torch.nn.functional.one_hot(train_y, num_classes).float()
    best_acc, best_epoch, best_wb, curve = -1.0, settings.epochs, wb.clone(), []
    bs = settings.batch_size
    for epoch in range(settings.epochs):
        lr = settings.lr
        if settings.schedule == "cosine":
            lr = 0.5 * settings.lr * (1 + math.cos(math.pi * epoch / settings.epochs))
        perm = torch.randperm(n, generator=g).to(device)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            xb = x1[idx]
            p = (xb @ wb.t()).softmax(1).sub_(onehot[idx]).div_(len(idx))
            opt.step(p.t() @ xb, lr)
        if vx1 is not None and vy is not None:  # both or neither: fit_probe sets them together
            acc = accuracy(vx1 @ wb.t(), vy)
            curve.append(acc)
            if acc > best_acc:
                best_acc, best_epoch, best_wb = acc, epoch + 1, wb.clone()
    if not has_val:
        best_wb = wb
    probe = LinearProbe(best_wb[:, :d].clone(), best_wb[:, d].clone(), mean, scale)
    return ProbeFit(
        probe,
        best_acc if has_val else None,
        best_epoch,
        curve,
        num_train=n,
        num_val=len(vy) if vy is not None else 0,
        train_seconds=time.perf_counter() - started,
    )


def _fit_lbfgs(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings,
    vx: torch.Tensor | None,
    vy: torch.Tensor | None,
    mean: torch.Tensor,
    scale: torch.Tensor,
    started: float,
) -> ProbeFit:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=settings.C, max_iter=settings.max_iter, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x.cpu().numpy(), y.cpu().numpy())
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    coef = torch.as_tensor(model.coef_, dtype=torch.float32)
    intercept = torch.as_tensor(model.intercept_, dtype=torch.float32)
    if len(model.classes_) == 2:  # binary: one row z; logits [0, z] give the same argmax
        coef = torch.cat([torch.zeros_like(coef), coef])
        intercept = torch.cat([torch.zeros_like(intercept), intercept])
    weight = torch.zeros(num_classes, x.shape[1])
    bias = torch.full((num_classes,), -1e30)  # classes absent from the train part: never chosen
    classes = torch.as_tensor(model.classes_, dtype=torch.long)
    weight[classes], bias[classes] = coef, intercept
    probe = LinearProbe(weight.to(x.device), bias.to(x.device), mean, scale)
    val_acc = None
    if vx is not None and vy is not None:  # both or neither: fit_probe sets them together
        val_acc = accuracy(torch.addmm(probe.bias, vx, probe.weight.t()), vy)
    return ProbeFit(
        probe,
        val_acc,
        None,
        [],
        num_train=len(y),
        num_val=0 if vy is None else len(vy),
        train_seconds=time.perf_counter() - started,
        extra={"converged": converged, "iterations": int(max(model.n_iter_))},
    )


def probe_numbers(fit: ProbeFit, test_x: torch.Tensor, test_y: torch.Tensor) -> dict:
    """The result numbers of one fitted probe scored on ``(test_x, test_y)``."""
    return {
        "test_top1": fit.probe.accuracy(test_x, test_y),
        "best_val_top1": fit.best_val_top1,
        "best_epoch": fit.best_epoch,
        "val_curve": fit.val_curve,
        "num_train": fit.num_train,
        "num_val": fit.num_val,
        "train_seconds": fit.train_seconds,
        **fit.extra,
    }


def fit_with_holdout(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings,
    *,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> ProbeFit:
    """:func:`fit_probe` on a seeded ``1 - val_fraction`` / ``val_fraction`` split of (x, y)."""
    seed = settings.seed if seed is None else seed
    tr, va = holdout_split(len(y), settings.val_fraction, seed)
    return fit_probe(x[tr], y[tr], num_classes, settings, val_x=x[va], val_y=y[va], device=device, seed=seed)
