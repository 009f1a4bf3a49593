"""Exact per-data-set reference for discrete-time gradient descent (numpy only, no rfscaling import).

The iteration, with v = w - wstar, H = C + wd I and per-step rates eta_n (heavy-ball momentum mu):

    w_{n+1} = w_n - eta_n grad L(w_n) + mu (w_n - w_{n-1}) + sqrt(2 T eta_n) xi_n,   w_{-1} = w_0,

is linear, so in the eigenbasis of C every direction (curvature h) evolves on its own. This module
iterates, per direction, the scalar recurrences of

* the response to a unit constant force, a_{n+1} = a_n - eta_n (h a_n - 1) + mu (a_n - a_{n-1}),
  a_0 = a_{-1} = 0: the mean is E[w_n] = a_n(H) C wstar and the label-noise response a_n(H) X^T eps;
* the initial condition, p_{n+1} = (1 + mu - eta_n h) p_n - mu p_{n-1}, p_0 = p_{-1} = 1;
* the 2 x 2 covariance S of (v_n, v_{n-1}) under the Langevin kicks,
  S <- M S M^T + 2 T eta_n e1 e1^T, M = [[1 + mu - eta_n h, -mu], [1, 0]], S_0 = 0,

and returns them in the layout of ``montecarlo_reference.spectral_functions`` so that
``montecarlo_reference.dataset_quantities(..., spectral=discrete_spectral(...))`` assembles bias,
variances and training error from them exactly as for gradient flow. Times are partial sums of
the rates: the state after n steps is reported at t_n = sum_{j < n} eta_j. ``t = inf`` is
supported for a constant rate without momentum (closed-form fixed point and stationary law).
"""

from __future__ import annotations

import numpy as np

__all__ = ["discrete_spectral", "step_times"]


def step_times(rates: np.ndarray) -> np.ndarray:
    """t_n = sum_{j < n} eta_j for n = 0 .. len(rates)."""
    return np.concatenate([[0.0], np.cumsum(rates)])


def _recurrences(h, rates, momentum, temperature, keep):
    """(a, p, s00) at the step indices ``keep`` (sorted), for curvatures h (r,)."""
    a, a_prev = np.zeros_like(h), np.zeros_like(h)
    p, p_prev = np.ones_like(h), np.ones_like(h)
    s00, s01, s11 = np.zeros_like(h), np.zeros_like(h), np.zeros_like(h)
    out = {}
    n_max = int(max(keep)) if len(keep) else 0
    want = set(int(k) for k in keep)
    for n in range(n_max + 1):
        if n in want:
            out[n] = (a.copy(), p.copy(), s00.copy())
        if n == n_max:
            break
        eta = rates[n]
        A = 1.0 + momentum - eta * h
        a, a_prev = A * a - momentum * a_prev + eta, a
        p, p_prev = A * p - momentum * p_prev, p
        s00, s01, s11 = (A * A * s00 - 2.0 * A * momentum * s01 + momentum**2 * s11
                         + 2.0 * temperature * eta, A * s00 - momentum * s01, s00)
    return out


def discrete_spectral(rates, momentum=0.0):
    """A ``spectral`` function for montecarlo_reference: per-direction quantities after the steps
    whose times (partial sums of ``rates``) are requested."""
    rates = np.asarray(rates, dtype=np.float64)
    tgrid = step_times(rates)

    def spectral(c, times, label_noise=0.0, weight_decay=0.0, temperature=0.0, init_variance=0.0):
        c = np.asarray(c, dtype=np.float64)
        times = np.asarray(times, dtype=np.float64)
        fin = np.isfinite(times)
        steps = np.searchsorted(tgrid, times[fin])
        steps = np.minimum(steps, tgrid.size - 1)
        if not np.allclose(tgrid[steps], times[fin], rtol=1e-12, atol=0):
            raise ValueError("times must be partial sums of the rates")
        h = np.concatenate([c + weight_decay, [weight_decay]])        # last: the null directions
        rec = _recurrences(h, rates, momentum, temperature, np.unique(steps))
        T = times.size
        a, p, s = (np.empty((T, h.size)) for _ in range(3))
        for i, n in zip(np.flatnonzero(fin), steps):
            a[i], p[i], s[i] = rec[int(n)]
        for i in np.flatnonzero(~fin):                                # fixed point, stationary law
            eta = float(rates[0])
            if momentum != 0 or not np.allclose(rates, eta):
                raise ValueError("t = inf needs a constant rate and no momentum")
            with np.errstate(divide="ignore", invalid="ignore"):
                a[i] = 1.0 / h
                p[i] = np.where(h > 0, 0.0, 1.0)
                s[i] = np.where(h > 0, 2.0 * temperature / (h * (2.0 - eta * h)),
                                np.inf if temperature > 0 else 0.0)
        ar, pr, sr = a[:, :-1], p[:, :-1], s[:, :-1]
        b = ar * c[None, :]
        g_label = label_noise * ar**2 * c[None, :]
        g_lang = sr
        g_init = init_variance * pr**2
        null = (np.zeros(T), s[:, -1], init_variance * p[:, -1] ** 2)
        return b, g_label, g_lang, g_init, null

    return spectral
