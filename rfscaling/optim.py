"""Optimizers for a user's own torch model, in the project's conventions (docs/theory.md).

:class:`SGLD` is heavy-ball gradient descent with weight decay and Langevin noise, the discrete
time version of ``dw = -grad L dt + sqrt(2T) dB`` that the DMFT engine predicts.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

__all__ = ["SGLD"]


class SGLD(torch.optim.Optimizer):
    """Stochastic gradient Langevin dynamics with heavy-ball momentum, one step per ``step()``::

        p <- p - lr * (grad + weight_decay * p) + momentum * (p - p_prev) + sqrt(2 * temperature * lr) * xi

    with xi ~ N(0, 1) i.i.d. per entry, drawn from ``generator`` (a seeded ``torch.Generator`` on
    the parameters' device; ``None`` uses torch's global generator). ``lr``, ``temperature``,
    ``weight_decay`` and ``momentum`` are per parameter group.

    **Convention.** ``grad`` must be the gradient of the loss *summed* over the batch,
    ``L = 1/2 sum_mu (y_mu - f(x_mu))^2`` (not the mean): then ``lr`` is the step of
    gradient-flow time t (t = steps * lr), ``weight_decay`` is the theory's lambda and
    ``temperature`` its T, and for ``momentum = 0`` and small ``lr`` the parameters sample
    ``exp(-(L + lambda/2 |p|^2) / T)``. On a quadratic with curvature h the discrete chain's exact
    stationary variance is ``T / (h (1 - lr h / 2))``. With momentum mu the slow dynamics runs at
    time step ``lr / (1 - mu)`` and its stationary temperature is ``T / (1 - mu)`` (small lr).

    ``temperature = 0`` is plain heavy-ball gradient descent and draws no random numbers; it
    equals ``torch.optim.SGD(lr, momentum, weight_decay)`` (dampening 0, no Nesterov): torch's
    buffer b <- mu b + g, p <- p - lr b is the same recursion for the step d_t = p_{t+1} - p_t =
    -lr g_t + mu d_{t-1}, which is what this class stores (bit for bit without momentum, to
    rounding with it, for a constant lr).
    """

    def __init__(self, params: Iterable, lr: float, temperature: float = 0.0, weight_decay: float = 0.0,
                 momentum: float = 0.0, *, generator: Optional[torch.Generator] = None) -> None:
        for name, value in (("lr", lr), ("temperature", temperature), ("weight_decay", weight_decay)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SGLD {name}={value!r}: must be a finite number >= 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGLD momentum={momentum!r}: must be in [0, 1)")
        defaults = dict(lr=lr, temperature=temperature, weight_decay=weight_decay, momentum=momentum)
        super().__init__(params, defaults)
        self.generator = generator

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, T, wd, mu = group["lr"], group["temperature"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                if mu == 0:  # torch.optim.SGD's own update (bit-identical at T = 0)
                    p.add_(g, alpha=-lr)
                    if T > 0:
                        p.add_(self._noise(p), alpha=math.sqrt(2.0 * T * lr))
                    continue
                state = self.state[p]
                d = g.mul(-lr)  # d_t = p_{t+1} - p_t
                if "step_taken" in state:  # d_{t-1}; zero before the first step (p_prev = p_0)
                    d.add_(state["step_taken"], alpha=mu)
                if T > 0:
                    d.add_(self._noise(p), alpha=math.sqrt(2.0 * T * lr))
                state["step_taken"] = d
                p.add_(d)
        return loss

    def _noise(self, p: torch.Tensor) -> torch.Tensor:
        return torch.randn(p.shape, generator=self.generator, dtype=p.dtype, device=p.device)
