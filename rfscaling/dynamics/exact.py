"""Exact integrator for the linear models: gradient flow / Ornstein-Uhlenbeck in closed form.

Per dataset the thin SVD ``X = U diag(s) V^T`` (r = min(P, N) directions; computed from the
smaller Gram matrix, see :class:`HessianEigen`) diagonalises the
Hessian ``H = X^T X + wd I``: eigenvalues ``h_j = s_j^2 + wd`` on the span of ``V`` and ``wd`` on
its orthogonal complement (the null space of ``X``). With ``g(h, t) = (1 - e^{-h t}) / h``
(``g(0, t) = t``) and ``b = X^T y``, the flow ``dw = -(H w - b) dt + sqrt(2T) dB`` gives, per
H-eigendirection,

    w_j(t) = e^{-h_j t} w_j(0) + g(h_j, t) b_j + sqrt(2 T g(2 h_j, t)) z_j .

So the law of ``w(t)`` given the dataset is Gaussian, diagonal in the H-eigenbasis, with

    mean        V diag(g(h, t) s^2) V^T wstar                      (init mean 0)
    label noise label_noise * g(h, t)^2 s^2                        (0 on the null space)
    Langevin    2 T g(2h, t) = T (1 - e^{-2 h t}) / h              (2 T t where h = 0)
    init        init_variance e^{-2 h t}

at any times, including t = inf (the ridge / GP-posterior limit), without stepping.
:class:`ExactDynamics` samples trajectories with the same init/step contract as the Euler
integrator (each ``advance`` is an exact OU transition); :func:`exact_moments` returns the
noise-averaged bias, variances, train error and per-mode errors per dataset;
:func:`posterior_sample` draws from the Bayesian GP posterior (``t = inf``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rfscaling.config import DynamicsConfig
from rfscaling.data.ensemble import EnsembleData
from rfscaling.dynamics.base import State
from rfscaling.dynamics.euler import EnsembleReadout, init_weights

__all__ = ["HessianEigen", "ExactDynamics", "PosteriorDynamics", "ExactMoments", "exact_moments", "posterior_sample", "flow_factor"]


def _ht(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """h * t with 0 * inf = 0."""
    prod = h * t
    return torch.where(h == 0, torch.zeros_like(prod), prod)


def flow_factor(h: torch.Tensor, t) -> torch.Tensor:
    """g(h, t) = (1 - e^{-h t}) / h, with g(0, t) = t; exact at t = 0 and t = inf."""
    t = torch.as_tensor(t, dtype=h.dtype, device=h.device)
    ht = _ht(h, t)
    safe = torch.where(h > 0, h, torch.ones_like(h))
    return torch.where(h > 0, -torch.expm1(-ht) / safe, t.expand_as(ht) if t.ndim else t * torch.ones_like(ht))


def _decay(h: torch.Tensor, t, power: float = 1.0) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=h.dtype, device=h.device)
    return torch.exp(-power * _ht(h, t))


def _langevin_var(h: torch.Tensor, t, temperature: float) -> torch.Tensor:
    """2 T g(2h, t); zero when T = 0 (also where g is infinite)."""
    if temperature == 0:
        return torch.zeros_like(_ht(h, torch.as_tensor(t, dtype=h.dtype, device=h.device)))
    return 2.0 * temperature * flow_factor(2.0 * h, t)


@dataclass(frozen=True)
class HessianEigen:
    """Eigen-decomposition of the design Gram ``X^T X = V diag(s2) V^T`` restricted to its range:
    ``s2`` (D, r), ``Vh`` (D, r, N) = V^T with r = min(P, N), ``null_weight`` (D, N) =
    1 - sum_j Vh_jn^2 (weight of coordinate n on the null space of X). The Hessian
    ``H = X^T X + weight_decay I`` has eigenvalues ``s2 + weight_decay`` on the range and
    ``weight_decay`` off it; the weight decay is the dynamics' own (``DynamicsConfig``).

    Computed in float64 from the smaller Gram matrix (``eigh`` of X X^T when P < N, of X^T X
    otherwise; much faster than an SVD on CPU); range directions with ``s2 <= rtol * max s2``
    are dropped to the null space (their column of ``Vh`` is zero).
    """

    s2: torch.Tensor
    Vh: torch.Tensor
    null_weight: torch.Tensor

    @staticmethod
    def of(features: torch.Tensor, rtol: float = 1e-12) -> "HessianEigen":
        X = features.to(torch.float64)
        D, P, N = X.shape
        if P < N:
            c, U = torch.linalg.eigh(X @ X.transpose(1, 2))  # (D, P), (D, P, P)
            keep = c > rtol * c.max(dim=-1, keepdim=True).values.clamp_min(1e-300)
            c = torch.where(keep, c, torch.zeros_like(c))
            inv = torch.where(keep, c.clamp_min(1e-300).rsqrt(), torch.zeros_like(c))
            Vh = (U * inv[:, None, :]).transpose(1, 2) @ X  # (D, P, N) = diag(c^-1/2) U^T X
            null = (1.0 - (Vh**2).sum(dim=-2)).clamp_min(0.0)
        else:
            c, V = torch.linalg.eigh(X.transpose(1, 2) @ X)  # (D, N), (D, N, N)
            c = c.clamp_min(0.0)
            Vh = V.transpose(1, 2)
            null = torch.zeros(D, N, dtype=X.dtype, device=X.device)
        dt = features.dtype
        return HessianEigen(c.to(dt), Vh.to(dt).contiguous(), null.to(dt))

    @property
    def has_null_space(self) -> bool:
        return self.Vh.shape[-2] < self.Vh.shape[-1]


class ExactDynamics(EnsembleReadout):
    """Exact sampler of the ensemble OU process; ``advance(state, n)`` jumps ``n * dt`` in time.

    Same contract as :class:`~rfscaling.dynamics.euler.EulerDynamics`; ``dt`` only sets the time
    grid (``time = dt * step``), there is no discretisation error.
    """

    stepwise = False  # one jump per call, whatever its length

    def __init__(self, data: EnsembleData, params: DynamicsConfig, dt: float = 1.0,
                 eig: HessianEigen | None = None) -> None:
        self.data = data
        self.params = params
        self.dt = float(dt)
        self.eig = eig if eig is not None else HessianEigen.of(data.features)
        self._h = self.eig.s2 + params.weight_decay  # Hessian eigenvalues on the range of X
        # projections of b = X^T y on the H-eigenbasis: V^T X^T y, (D, R, r)
        self._VhT = self.eig.Vh.transpose(1, 2)  # (D, N, r) view: a contiguous copy was 1.2x faster, 2x memory
        self._b = torch.bmm(torch.bmm(data.labels, data.features), self._VhT)
        self._Xt = data.features.transpose(1, 2).contiguous()

    @property
    def lambda_max(self) -> float:
        """Largest Hessian eigenvalue over the datasets."""
        return float(self._h.max())

    def plan(self, call_lengths) -> int:
        return 1  # a jump costs the same for any length: nothing to plan

    def describe(self) -> dict:
        return {"integrator": "exact", "euler_form": None, "euler_stride": None}

    def init(self, generator: torch.Generator) -> State:
        D, R = self.data.n_datasets, self.data.n_replicas
        X = self.data.features
        return State(init_weights((D, R, self.data.n_modes), self.params, generator, X.dtype, X.device), 0, 0.0, generator)

    def transition(self, weights: torch.Tensor, delta: float, generator: torch.Generator) -> torch.Tensor:
        """Exact OU transition of the weights (D, R, N) over time ``delta`` (may be inf)."""
        eig, T = self.eig, self.params.temperature
        Vh, VhT = eig.Vh, self._VhT
        h = self._h[:, None, :]  # (D, 1, r)
        a = torch.bmm(weights, VhT)  # row-space coordinates, (D, R, r)
        a_new = _decay(h, delta) * a + flow_factor(h, delta) * self._b
        if T > 0:
            z = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
            a_new = a_new + _langevin_var(h, delta, T).sqrt() * z
        if not eig.has_null_space:
            return torch.bmm(a_new, Vh)
        # w = a Vh + perp with perp = w - a Vh decaying at the weight-decay rate d0, so
        # w_new = d0 w + (a_new - d0 a) Vh [+ s0 (z - (z Vh^T) Vh)]: two products, not three
        wd = torch.tensor(self.params.weight_decay, dtype=weights.dtype, device=weights.device)
        d0 = _decay(wd, delta)
        w = d0 * weights
        coef = a_new - d0 * a
        if T > 0:
            var0 = _langevin_var(wd, delta, T)
            if not torch.isfinite(var0):
                raise ValueError("temperature > 0 with weight_decay = 0 has no stationary law on the "
                                 "null space of X (P < N): use a finite time or weight_decay > 0")
            z = torch.randn(weights.shape, generator=generator, dtype=weights.dtype, device=weights.device)
            s0 = var0.sqrt()
            w = w + s0 * z
            coef = coef - s0 * torch.bmm(z, VhT)  # the noise's row-space part is not in perp
        return torch.baddbmm(w, coef, Vh)

    def advance(self, state: State, n_steps: int) -> State:
        n = state.step + int(n_steps)
        w = self.transition(state.weights, self.dt * int(n_steps), state.generator)
        return State(w, n, n * self.dt, state.generator)



def posterior_sample(data: EnsembleData, params: DynamicsConfig, generator: torch.Generator,
                     eig: HessianEigen | None = None) -> State:
    """Bayesian GP posterior draws (noise variance T, prior variance T/weight_decay), one per
    replica: mean (X^T X + wd I)^{-1} X^T y_r, covariance T (X^T X + wd I)^{-1}. Closed form,
    no stepping; returned as a State at time = inf."""
    if params.temperature <= 0:
        raise ValueError(f"temperature={params.temperature}: the posterior needs temperature > 0")
    dyn = ExactDynamics(data, params, dt=math.inf, eig=eig)
    if dyn.eig.has_null_space and params.weight_decay <= 0:
        raise ValueError("weight_decay=0: the posterior is improper when P < N (needs weight_decay > 0)")
    D, R, N = data.n_datasets, data.n_replicas, data.n_modes
    w0 = torch.zeros(D, R, N, dtype=data.features.dtype, device=data.features.device)
    return State(dyn.transition(w0, math.inf, generator), 0, math.inf, generator)


@dataclass(frozen=True)
class ExactMoments:
    """Noise-averaged quantities per dataset at ``times`` (T,).

    Totals (T, D): ``bias``, ``variance_label_noise``, ``variance_langevin``, ``variance_init``,
    ``variance``, ``generalization_error``, ``train_error``. Per mode (T, D, N): ``mode_bias``,
    ``mode_variance``, ``mode_error``. ``mean_weights`` (T, D, N) = E[w(t) | dataset].
    """

    times: torch.Tensor
    mean_weights: torch.Tensor
    mode_bias: torch.Tensor
    mode_variance_label_noise: torch.Tensor
    mode_variance_langevin: torch.Tensor
    mode_variance_init: torch.Tensor
    train_error: torch.Tensor

    @property
    def mode_variance(self) -> torch.Tensor:
        return self.mode_variance_label_noise + self.mode_variance_langevin + self.mode_variance_init

    @property
    def mode_error(self) -> torch.Tensor:
        return self.mode_bias + self.mode_variance

    @property
    def bias(self) -> torch.Tensor:
        return self.mode_bias.sum(-1)

    @property
    def variance_label_noise(self) -> torch.Tensor:
        return self.mode_variance_label_noise.sum(-1)

    @property
    def variance_langevin(self) -> torch.Tensor:
        return self.mode_variance_langevin.sum(-1)

    @property
    def variance_init(self) -> torch.Tensor:
        return self.mode_variance_init.sum(-1)

    @property
    def variance(self) -> torch.Tensor:
        return self.mode_variance.sum(-1)

    @property
    def generalization_error(self) -> torch.Tensor:
        return self.mode_error.sum(-1)


def exact_moments(data: EnsembleData, params: DynamicsConfig, times, eig: HessianEigen | None = None) -> ExactMoments:
    """Mean and all noise covariances (label noise, Langevin, init) of the flow per dataset,
    evaluated at ``times`` without stepping; see the module docstring. Uses the datasets'
    ``features``, ``target_weights``, ``eigenvalues`` and ``label_noise`` (not the sampled labels).
    Eigen-coordinate data only: for the random-projection student (``data.readout``) use
    tests/projection_reference.py's closed forms."""
    if data.readout is not None:
        raise ValueError("exact_moments: data with a readout (model=random_projection) is not supported")
    eig = eig if eig is not None else HessianEigen.of(data.features)
    X = data.features
    t = torch.as_tensor(times, dtype=X.dtype, device=X.device).reshape(-1, 1, 1)  # (T, 1, 1)
    P = data.n_samples
    lam = data.eigenvalues
    s2, Vh = eig.s2, eig.Vh
    h = s2 + params.weight_decay
    r = s2.shape[-1]
    wd = torch.tensor(params.weight_decay, dtype=X.dtype, device=X.device)
    T = params.temperature
    sig2 = data.label_noise

    g = flow_factor(h[None], t)  # (T, D, r)
    b = g * s2[None]  # (T, D, r)
    omega = torch.bmm(Vh, data.target_weights[:, :, None])[:, :, 0]  # (D, r) = V^T wstar
    mean = torch.einsum("tdr,drn->tdn", b * omega[None], Vh)
    mode_bias = lam * (mean - data.target_weights[None]) ** 2

    V2 = Vh**2  # (D, r, N)
    lab = sig2 * g**2 * s2[None]
    lang = _langevin_var(h[None], t, T)
    init = params.init_variance * _decay(h[None], t, 2.0)

    def diag(c, c0):
        v = torch.einsum("tdr,drn->tdn", c, V2)
        if eig.has_null_space:
            v = v + torch.where(eig.null_weight[None] == 0, torch.zeros_like(v), c0.reshape(-1, 1, 1) * eig.null_weight[None])
        return lam * v

    t1 = t.reshape(-1)
    zero = torch.zeros_like(t1)
    lang0 = _langevin_var(wd, t1, T) if T > 0 else zero
    init0 = params.init_variance * _decay(wd, t1, 2.0)
    var_lab, var_lang, var_init = diag(lab, zero), diag(lang, lang0), diag(init, init0)

    train = ((b - 1.0) ** 2 * s2[None] * omega[None] ** 2).sum(-1)
    train = train + sig2 * (((1.0 - b) ** 2).sum(-1) + (P - r))
    train = train + ((lang + init) * s2[None]).sum(-1)
    return ExactMoments(t1, mean, mode_bias, var_lab, var_lang, var_init, train / P)


class PosteriorDynamics:
    """The Bayesian GP posterior as a dynamics with no steps: ``init`` draws one posterior
    sample per replica in closed form (state time = inf); ``advance`` is the identity."""

    dt = math.inf
    stepwise = False
    lambda_max = None

    def __init__(self, data: EnsembleData, params: DynamicsConfig, eig: HessianEigen | None = None) -> None:
        self.data = data
        self.params = params
        self._exact = ExactDynamics(data, params, dt=math.inf, eig=eig)

    def init(self, generator: torch.Generator) -> State:
        return posterior_sample(self.data, self.params, generator, eig=self._exact.eig)

    def advance(self, state: State, n_steps: int) -> State:
        return state

    def plan(self, call_lengths) -> int:
        return 1

    def describe(self) -> dict:
        return {"integrator": "closed_form", "euler_form": None, "euler_stride": None}

    def train_errors(self, weights: torch.Tensor) -> torch.Tensor:
        return self._exact.train_errors(weights)

    def macs_per_step(self) -> int:
        return 0
