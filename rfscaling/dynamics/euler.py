"""Full-batch gradient flow / weight decay / Langevin SGLD by Euler(-Maruyama) steps.

Contract (jax-md style, :class:`~rfscaling.dynamics.base.Dynamics`): ``state = dyn.init(generator)``;
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

Strided stepping (noise-free ``kernel`` and ``hessian`` forms). In both forms one step is an
affine map ``z <- z M + f`` of the form's coordinates ``z`` (``a`` or ``w``) with a fixed
symmetric ``M = (1 - dt wd) I - dt G`` (G the Gram). ``s`` steps are then one product with the
precomputed propagator ``M^s`` (log2 s squarings) plus the summed forcing, so a run does
``n // s + n % s`` products per ``advance(n)`` instead of ``n``. These are still the Euler
iterates (not the flow's closed form), equal up to rounding: the computed ``M^s`` is off by
~s eps (measured 1e-6 / 1e-5 / 8e-5 in float32 for s = 16 / 256 / 4096), yet over a run the
iterates are as close to float64 as stepping one product per step (tests/test_dynamics.py;
with TF32 matmuls on a GPU that error would be ~1000x larger: keep them off). ``plan``
picks ``s`` from the run's advance calls by cost; ``set_stride`` sets it. With weight decay the
kernel form's forcing decays as ``c_k = (1 - dt wd)^k``; over ``s`` steps it sums to
``e0 T_s`` with ``T_s = sum_j (1 - dt wd)^j M^(s-1-j)``, doubled alongside ``M^s``.
"""

from __future__ import annotations

import math

import torch

from rfscaling.config import DynamicsConfig
from rfscaling.data.ensemble import EnsembleData
from rfscaling.dynamics.base import State
from rfscaling.dynamics.spectral import top_eigenvalue

__all__ = ["State", "EulerDynamics", "FORMS", "MAX_STRIDE", "choose_form", "choose_stride",
           "design_gram", "hessian_top_eigenvalue", "stable_step_size"]


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


# Largest stride considered, and the extra memory the propagators may take (bytes).
MAX_STRIDE = 4096
_STRIDE_MAX_BYTES = 4 * 2**30
# A step's (R x m) @ (m x m) product reads every matrix element for only R multiply-adds, so its
# rate is bounded by memory bandwidth; a squaring is compute bound. Multiply-adds a core does
# per element it streams from memory: ~16 on the 2-core CPU of docs/performance.md (a square
# GEMM ran 2.7x faster per multiply-add than R = 8 products at m = 2048); more on a GPU.
_MACS_PER_STREAMED_ELEMENT = 16.0


def _gemm_rate_over_step(columns: int) -> float:
    """Multiply-adds per second of a squaring relative to a step product with ``columns``."""
    return max(1.5, _MACS_PER_STREAMED_ELEMENT / max(1, columns))


def _call_products(lengths, s: int, per_call: int) -> int:
    """Matrix products of the steps for advance calls of ``lengths`` at stride ``s``."""
    if s == 1:
        return sum(lengths)
    return sum(n // s + n % s + (per_call if n >= s else 0) for n in lengths)


def choose_stride(call_lengths, gram_size: int, columns: int, form: str, max_stride: int = MAX_STRIDE) -> int:
    """The stride (a power of two) that minimises the estimated cost of a run that makes
    ``advance`` calls of ``call_lengths`` steps with a ``gram_size`` x ``gram_size`` step matrix
    and ``columns`` weight vectors per dataset: setup (log2 s squarings, twice as many in the
    kernel form, plus s steps of the forcing) plus ``n // s + n % s`` products per call (the kernel
    form adds one per call for its anchor). 1 for the features form."""
    lengths = [int(n) for n in call_lengths if int(n) > 0]
    if form not in ("kernel", "hessian") or not lengths:
        return 1
    m, R = int(gram_size), max(1, int(columns))
    step = float(m) * m * R  # multiply-adds of one product per dataset
    gemm = float(m) ** 3 / _gemm_rate_over_step(R)  # one squaring, in step-product units of cost
    per_level = 2 if form == "kernel" else 1
    per_call = 1 if form == "kernel" else 0
    best, best_cost = 1, step * sum(lengths)
    s = 2
    while s <= min(max_stride, max(lengths)):
        levels = s.bit_length() - 1
        cost = levels * per_level * gemm + step * (s + _call_products(lengths, s, per_call))
        if cost < best_cost:
            best, best_cost = s, cost
        s *= 2
    return best


def init_weights(shape, params: DynamicsConfig, generator: torch.Generator, dtype, device) -> torch.Tensor:
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
        """(1/P) |y - X w|^2 per member, (D, R); for K evaluations stacked as (D, K R, N)
        (``EvalGroup.stack``), (D, K R). Always from the weights alone: a residual cached by the
        kernel form was 0.2 ms cheaper per evaluation but made a run rebuilt from its final
        checkpoint report a different last digit."""
        labels = self.data.labels  # (D, R, P): replicas differ in their label noise
        if weights.shape[1] != labels.shape[1]:
            labels = labels.repeat(1, weights.shape[1] // labels.shape[1], 1)
        resid = torch.baddbmm(labels, weights, self._Xt, beta=-1.0)
        return (resid**2).mean(dim=-1)

    def macs_per_step(self) -> int:
        """Multiply-adds of one full-batch step for the whole ensemble: 2 P N per member."""
        d = self.data
        return 2 * d.n_samples * d.n_modes * d.n_datasets * d.n_replicas


class EulerDynamics(EnsembleReadout):
    """Euler(-Maruyama) integrator of the ensemble; see the module docstring."""

    stepwise = True  # cost in proportion to the steps: the loop advances in progress chunks

    def __init__(self, data: EnsembleData, params: DynamicsConfig, dt: float | None = None,
                 lambda_max: float | None = None, form: str = "auto", gram: torch.Tensor | None = None,
                 max_stride: int = MAX_STRIDE) -> None:
        """``lambda_max``: max_d lambda_max(H_d) if the caller has it already (else computed).
        ``form``: one of ``FORMS`` (see the module docstring). ``gram``: :func:`design_gram` of
        the features if the caller has it; ``form="auto"`` computes it unless ``lambda_max`` is
        given without it (then the features form is used, which needs no setup). ``max_stride``:
        the largest stride ``plan`` may pick (1: one product per step)."""
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
        self.max_stride = int(max_stride)
        self.stride = 1
        self._power = self._sum_matrix = self._forcing = None

    # -- strided stepping (see the module docstring) ------------------------------------------

    def describe(self) -> dict:
        return {"integrator": "euler", "euler_form": self.form, "euler_stride": self.stride}

    def plan(self, call_lengths) -> int:
        """Choose and set the stride for a run that makes ``advance`` calls of these lengths
        (the whole run from step 0, so that a resumed run computes the same iterates); returns
        it. Stays 1 where striding does not apply (features form, Langevin noise) or does not
        pay, or when the propagators (and a squaring's output) would need more than 4 GiB."""
        if self.form not in ("kernel", "hessian") or self._noise > 0:
            return self.set_stride(1)
        d = self.data
        m = d.n_samples if self.form == "kernel" else d.n_modes
        matrices = 3 if self.form == "kernel" else 2  # the propagators and one squaring's output
        if matrices * d.n_datasets * m * m * self._X.element_size() > _STRIDE_MAX_BYTES:
            return self.set_stride(1)
        return self.set_stride(choose_stride(call_lengths, m, d.n_replicas, self.form, self.max_stride))

    def set_stride(self, stride: int) -> int:
        """Step ``stride`` Euler steps per product from now on (1: one product per step)."""
        s = int(stride)
        if s < 1 or s & (s - 1):
            raise ValueError(f"stride={stride}: must be a power of two >= 1")
        if s > 1 and (self.form not in ("kernel", "hessian") or self._noise > 0):
            raise ValueError(f"stride={s}: needs the kernel or hessian form without noise (form={self.form!r}, "
                             f"temperature={self.params.temperature})")
        if s == self.stride:
            return s
        self.stride, self._power, self._sum_matrix, self._forcing = s, None, None, None
        if s == 1:
            return s
        G, decay, dt = self._gram, self._decay, self.dt
        eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
        power = torch.add(decay * eye, G, alpha=-dt)  # M, (D, m, m)
        weighted = self.form == "kernel"  # the anchor's forcing needs T_s (= S_s without decay)
        T = eye.expand_as(G).clone() if weighted else None  # T_1 = I
        k = 1
        while k < s:  # M^(2k) = M^k M^k;  T_2k = T_k M^k + decay^k T_k
            if weighted:
                T = torch.baddbmm(T, T, power, beta=decay**k)
            power = torch.bmm(power, power)
            k *= 2
        self._power, self._sum_matrix = power, T
        # the forcing summed over s steps, from s plain steps started at zero (no anchor term)
        if self.form == "hessian":
            self._forcing = self._run("hessian", slice(None), torch.zeros_like(self._b), s, None, stride=1)
        else:
            self._forcing = self._kernel_steps(self._gram, torch.zeros_like(self.data.labels), None,
                                               self.data.labels, s)
        return s

    def init(self, generator: torch.Generator) -> State:
        D, R = self.data.n_datasets, self.data.n_replicas
        w = init_weights((D, R, self.data.n_modes), self.params, generator, self._X.dtype, self._X.device)
        return State(w, 0, 0.0, generator)

    def gradient(self, weights: torch.Tensor) -> torch.Tensor:
        resid = torch.baddbmm(self.data.labels, weights, self._Xt, beta=-1.0)  # X w - y, (D, R, P)
        return torch.baddbmm(weights, resid, self._X, beta=self.params.weight_decay)

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

    def _kernel_steps(self, K: torch.Tensor, a: torch.Tensor, e: torch.Tensor | None, y: torch.Tensor, n: int,
                      c: float = 1.0) -> torch.Tensor:
        """``n`` kernel-form steps ``a <- decay a - dt (c_k e + K a - y)``, ``c_k = c decay^k``
        (``e = X w0``; None: no anchor term). Returns ``a`` (d, R, P)."""
        dt, decay = self.dt, self._decay
        if decay == 1.0:  # gradient flow: c stays 1
            f = -y if e is None else e - y
            for _ in range(n):
                a.sub_(torch.baddbmm(f, a, K), alpha=dt)  # r = X w - y = X w0 - y + K a
            return a
        for _ in range(n):
            f = -y if e is None else torch.add(-y, e, alpha=c)
            r = torch.baddbmm(f, a, K)  # X w - y
            a = torch.add(r, a, alpha=-decay / dt).mul_(-dt)  # decay a - dt r
            c *= decay
        return a

    def _run(self, form: str, ds: slice, w: torch.Tensor, n: int, gen: torch.Generator | None,
             stride: int | None = None) -> torch.Tensor:
        """``n`` steps of the datasets ``ds`` whose weights are ``w`` (d, R, N)."""
        dt, decay = self.dt, self._decay
        s = self.stride if stride is None else stride
        q, n_rest = divmod(n, s) if s > 1 else (0, n)
        X, Xt, y = self._X[ds], self._Xt[ds], self.data.labels[ds]
        if form == "kernel":
            K = self._gram[ds]  # (d, P, P), symmetric: a K = (K a^T)^T
            a = torch.zeros_like(y)  # (d, R, P); w = c w0 + X^T a
            e = torch.bmm(w, Xt)  # X w0, (d, R, P)
            c = 1.0
            if q:  # a <- a M^s + dt y S_s - c dt e T_s, c <- c decay^s
                Ms, ys = self._power[ds], self._forcing[ds]
                g = torch.bmm(e, self._sum_matrix[ds]).mul_(-dt)  # - dt e T_s, once per call
                cs = decay**s
                for _ in range(q):
                    a = torch.baddbmm(ys, a, Ms).add_(g, alpha=c)
                    c *= cs
            a = self._kernel_steps(K, a, e, y, n_rest, c)
            return torch.baddbmm(w, a, X, beta=c * decay**n_rest)
        if form == "hessian":
            H, b = self._gram[ds], self._b[ds]
            if q:  # w <- w M^s + dt b S_s
                Ms, fs = self._power[ds], self._forcing[ds]
                for _ in range(q):
                    w = torch.baddbmm(fs, w, Ms)
            for _ in range(n_rest):
                w = torch.baddbmm(w, w, H, beta=decay, alpha=-dt).add_(b, alpha=dt)
                if self._noise > 0:
                    w.add_(torch.randn(w.shape, generator=gen, dtype=w.dtype, device=w.device), alpha=self._noise)
            return w
        for _ in range(n):  # features form (never strided)
            resid = torch.baddbmm(y, w, Xt, beta=-1.0)  # X w - y, (d, R, P)
            w = torch.baddbmm(w, resid, X, beta=decay, alpha=-dt)
            if self._noise > 0:
                w.add_(torch.randn(w.shape, generator=gen, dtype=w.dtype, device=w.device), alpha=self._noise)
        return w
