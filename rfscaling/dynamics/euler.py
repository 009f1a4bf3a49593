"""Full-batch gradient flow / weight decay / Langevin SGLD by Euler(-Maruyama) steps.

Contract (jax-md style): ``state = dyn.init(generator)``; ``state = dyn.step(state)``;
``state = dyn.advance(state, n)``. The whole ensemble (D datasets x R replicas) is one batched
tensor ``weights`` of shape (D, R, N); there is no Python loop over members.

Loss summed over samples: ``L(w) = 1/2 |y - X w|^2 + weight_decay/2 |w|^2``, so
``grad L = X^T (X w - y) + weight_decay w`` and one step is

    w <- w - dt grad L(w) + sqrt(2 temperature dt) xi,   xi ~ N(0, I),   t = dt * steps.

The default step ``dt = 1 / lambda_max(H)`` with ``H = X^T X + weight_decay I`` (the largest over
the D datasets) is stable (the bound is ``2 / lambda_max``); docs/testbed.md states the
discretisation error against the exact flow.

Three algebraically identical forms of the same iterates (equal up to rounding), chosen by cost
per step and member (``form="auto"`` picks the cheapest admissible one):

* ``features``: ``r = X w - y``, ``w <- (1 - dt wd) w - dt X^T r``: two (P x N) products, 2 P N.
* ``kernel`` (P < N, temperature 0): write ``w = c w_0 + X^T a`` with the anchor ``w_0`` the
  weights at the start of an ``advance`` call. Then ``r = c X w_0 + K a - y`` with
  ``K = X X^T`` (P x P), ``a <- (1 - dt wd) a - dt r`` and ``c <- (1 - dt wd) c``: one (P x P)
  product, P^2, plus one (P x N) product at each end of the call. Needs no noise outside the
  row space of X, hence temperature 0.
* ``hessian`` (N < 2P): ``w <- (1 - dt wd) w - dt (H0 w - b)`` with ``H0 = X^T X`` (N x N) and
  ``b = X^T y``: one (N x N) product, N^2; any temperature (same noise stream as ``features``).

The Gram matrix (``K`` or ``H0``, the smaller one) is the one ``hessian_top_eigenvalue`` needs
for the default step, so a caller that passes it (``gram=``) pays for it once. When the
ensemble is noise-free, ``advance`` runs blocks of datasets one after the other for all its
steps, so that each block's matrices stay in cache (datasets are independent; same results).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rfscaling.data.ensemble import EnsembleData
from rfscaling.dynamics.spectral import top_eigenvalue

__all__ = ["DynamicsParams", "State", "EulerDynamics", "FORMS", "choose_form", "design_gram", "hessian_top_eigenvalue",
           "stable_step_size"]


@dataclass(frozen=True)
class DynamicsParams:
    """``dw = -grad L dt + sqrt(2 temperature) dB``, ``w(0) ~ N(0, init_variance I)``."""

    weight_decay: float = 0.0
    temperature: float = 0.0
    init_variance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("weight_decay", "temperature", "init_variance"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}={v}: must be a finite number >= 0")


@dataclass(frozen=True)
class State:
    """Ensemble state: weights (D, R, N) in eigen-coordinates, step count, time = dt * step.

    ``generator`` is the torch Generator that drives the noise (advanced in place by steps).
    """

    weights: torch.Tensor
    step: int
    time: float
    generator: torch.Generator


def design_gram(features: torch.Tensor) -> torch.Tensor:
    """The smaller Gram matrix per dataset in the design's dtype: ``X X^T`` (D, P, P) when
    P < N, else ``X^T X`` (D, N, N)."""
    X = features
    return X @ X.transpose(1, 2) if X.shape[1] < X.shape[2] else X.transpose(1, 2) @ X


def hessian_top_eigenvalue(features: torch.Tensor, weight_decay: float = 0.0,
                           gram: torch.Tensor | None = None) -> torch.Tensor:
    """lambda_max(X^T X + weight_decay I) per dataset, (D,), float64, from the smaller Gram
    (``gram`` if the caller has it: :func:`design_gram`) by Lanczos (eigvalsh for small Grams);
    agrees with eigvalsh to ~1e-15 relative at a fraction of its cost (docs/performance.md)."""
    gram = design_gram(features) if gram is None else gram
    return top_eigenvalue(gram) + float(weight_decay)


def stable_step_size(features: torch.Tensor, weight_decay: float = 0.0, fraction: float = 1.0) -> float:
    """``dt = fraction / max_d lambda_max(H_d)``; Euler is stable for fraction < 2."""
    if not 0 < fraction < 2:
        raise ValueError(f"fraction={fraction}: must be in (0, 2) for a stable Euler step")
    return float(fraction / hessian_top_eigenvalue(features, weight_decay).max())


FORMS = ("auto", "features", "kernel", "hessian")

# Working set (bytes) of one block of datasets in a noise-free ``advance``: small enough that a
# block's Gram matrices are re-read from cache (a quarter of this machine's 32 MiB L3; blocks of
# 2-8 MiB were 1.3-1.6x faster than 16-64 MiB at N = P = 1024, docs/performance.md).
_BLOCK_BYTES = 8 * 2**20


def choose_form(n_samples: int, n_modes: int, temperature: float, have_gram: bool = True) -> str:
    """The cheapest admissible step form (multiply-adds per step and member: features 2 P N,
    kernel P^2, hessian N^2). Without a precomputed Gram matrix the features form is kept: the
    Gram product costs as much as min(P, N) / 2 feature steps of one member per member."""
    P, N = n_samples, n_modes
    if not have_gram:
        return "features"
    costs = {"features": 2 * P * N, "hessian": N * N}
    if P < N and temperature == 0:
        costs["kernel"] = P * P
    if P < N:
        costs.pop("hessian")  # the N x N matrix is not the Gram we have
    return min(costs, key=costs.get)


def init_weights(shape, params: DynamicsParams, generator: torch.Generator, dtype, device) -> torch.Tensor:
    w = torch.zeros(shape, dtype=dtype, device=device)
    if params.init_variance > 0:
        w = math.sqrt(params.init_variance) * torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return w


class EnsembleReadout:
    """What every integrator of the linear ensemble reports besides its state: the training errors
    and the cost of one full-batch step. Needs ``self.data`` and ``self._Xt`` (X^T, (D, N, P))."""

    data: EnsembleData
    _Xt: torch.Tensor

    def train_errors(self, weights: torch.Tensor) -> torch.Tensor:
        """(1/P) |y - X w|^2 per member, (D, R). Always from the weights alone: a residual cached
        by the kernel form was 0.2 ms cheaper per evaluation but made a run rebuilt from its
        final checkpoint report a different last digit."""
        resid = torch.baddbmm(self.data.labels, weights, self._Xt, beta=-1.0)
        return (resid**2).mean(dim=-1)

    def macs_per_step(self) -> int:
        """Multiply-adds of one full-batch step for the whole ensemble: 2 P N per member."""
        d = self.data
        return 2 * d.n_samples * d.n_modes * d.n_datasets * d.n_replicas


class EulerDynamics(EnsembleReadout):
    """Euler(-Maruyama) integrator of the ensemble; see the module docstring."""

    def __init__(self, data: EnsembleData, params: DynamicsParams, dt: float | None = None,
                 lambda_max: float | None = None, form: str = "auto", gram: torch.Tensor | None = None) -> None:
        """``lambda_max``: max_d lambda_max(H_d) if the caller has it already (else computed).
        ``form``: one of ``FORMS`` (see the module docstring). ``gram``: :func:`design_gram` of
        the features if the caller has it; ``form="auto"`` computes it unless ``lambda_max`` is
        given without it (then the features form is used, which needs no setup)."""
        if form not in FORMS:
            raise ValueError(f"form={form!r}: must be one of {', '.join(FORMS)}")
        self.data = data
        self.params = params
        P, N = data.n_samples, data.n_modes
        if gram is None and (form in ("kernel", "hessian") or (form == "auto" and lambda_max is None)):
            gram = design_gram(data.features)
        self.lambda_max = (float(lambda_max) if lambda_max is not None else
                           float(hessian_top_eigenvalue(data.features, params.weight_decay, gram=gram).max()))
        self.dt = float(dt) if dt is not None else 1.0 / self.lambda_max
        if not math.isfinite(self.dt) or self.dt <= 0:
            raise ValueError(f"dt={dt}: must be a finite number > 0")
        if self.dt * self.lambda_max >= 2.0:
            raise ValueError(
                f"dt={self.dt:.4g}: unstable, must be < 2/lambda_max(H) = {2.0 / self.lambda_max:.4g}"
            )
        if form == "auto":
            form = choose_form(P, N, params.temperature, have_gram=gram is not None)
        if form == "kernel" and not (P < N and params.temperature == 0):
            raise ValueError(f"form='kernel': needs n_samples < n_modes and temperature 0 (P={P}, N={N}, "
                             f"temperature={params.temperature})")
        if form == "hessian" and P < N:
            raise ValueError(f"form='hessian': needs n_samples >= n_modes (P={P}, N={N})")
        self.form = form
        self._X = data.features
        self._Xt = data.features.transpose(1, 2).contiguous()
        self._noise = math.sqrt(2.0 * params.temperature * self.dt)
        self._decay = 1.0 - self.dt * params.weight_decay
        self._gram = gram if form in ("kernel", "hessian") else None
        if form == "hessian":
            self._b = torch.bmm(data.labels, self._X)  # X^T y per member, (D, R, N)
        # datasets per block so that a block's Gram (or design) stays in cache; all at once with noise
        per_dataset = (self._gram if self._gram is not None else self._X)[0].numel() * self._X.element_size()
        D = data.n_datasets
        on_cpu = self._X.device.type == "cpu"  # a GPU wants the whole batch in one kernel
        self._block = D if self._noise > 0 or not on_cpu else max(1, min(D, _BLOCK_BYTES // max(per_dataset, 1)))

    def init(self, generator: torch.Generator) -> State:
        D, R = self.data.n_datasets, self.data.n_replicas
        w = init_weights((D, R, self.data.n_modes), self.params, generator, self._X.dtype, self._X.device)
        return State(w, 0, 0.0, generator)

    def gradient(self, weights: torch.Tensor) -> torch.Tensor:
        resid = torch.baddbmm(self.data.labels, weights, self._Xt, beta=-1.0)  # X w - y, (D, R, P)
        return torch.baddbmm(weights, resid, self._X, beta=self.params.weight_decay)

    def step(self, state: State) -> State:
        return self.advance(state, 1)

    def advance(self, state: State, n_steps: int) -> State:
        n = int(n_steps)
        if n <= 0:
            return state
        w, form = state.weights, self.form
        if form == "kernel" and n < 3:  # the anchor costs about two kernel steps
            form = "features"
        if self._block >= self.data.n_datasets:
            w = self._run(form, slice(None), w, n, state.generator)
        else:
            w = torch.cat([self._run(form, slice(i, i + self._block), w[i:i + self._block], n, state.generator)
                           for i in range(0, self.data.n_datasets, self._block)])
        m = state.step + n
        return State(w, m, m * self.dt, state.generator)

    def _run(self, form: str, ds: slice, w: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` steps of the datasets ``ds`` whose weights are ``w`` (d, R, N)."""
        dt, decay = self.dt, self._decay
        X, Xt, y = self._X[ds], self._Xt[ds], self.data.labels[ds]
        if form == "kernel":
            K = self._gram[ds]  # (d, P, P), symmetric: a K = (K a^T)^T
            a = torch.zeros_like(y)  # (d, R, P); w = c w0 + X^T a
            e = torch.bmm(w, Xt)  # X w0, (d, R, P)
            c = 1.0
            if decay == 1.0:  # gradient flow: c stays 1
                e = e - y
                for _ in range(n):
                    a.sub_(torch.baddbmm(e, a, K), alpha=dt)  # r = X w - y = X w0 - y + K a
                return torch.baddbmm(w, a, X)
            for _ in range(n):
                r = torch.baddbmm(torch.add(-y, e, alpha=c), a, K)  # X w - y
                a = torch.add(r, a, alpha=-decay / dt).mul_(-dt)  # decay a - dt r
                c *= decay
            return torch.baddbmm(w, a, X, beta=c)
        if form == "hessian":
            H, b = self._gram[ds], self._b[ds]
            for _ in range(n):
                w = torch.baddbmm(w, w, H, beta=decay, alpha=-dt).add_(b, alpha=dt)
                if self._noise > 0:
                    w.add_(torch.randn(w.shape, generator=gen, dtype=w.dtype, device=w.device), alpha=self._noise)
            return w
        for _ in range(n):
            resid = torch.baddbmm(y, w, Xt, beta=-1.0)  # X w - y, (d, R, P)
            w = torch.baddbmm(w, resid, X, beta=decay, alpha=-dt)
            if self._noise > 0:
                w.add_(torch.randn(w.shape, generator=gen, dtype=w.dtype, device=w.device), alpha=self._noise)
        return w
