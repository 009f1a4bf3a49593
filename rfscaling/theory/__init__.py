"""DMFT theory engine: typical-case learning curves of linear random-feature regression.

    from rfscaling.theory import predict, power_law_task
    lam, w2 = power_law_task(N=1000, alpha=1.0, beta=1.0)
    pred = predict(lam, w2, n_samples=256, times=np.geomspace(1e-3, 1e3, 50), label_noise=0.1)
"""

from .dmft import Prediction, predict
from .kappa import kappa_at_zero, kappa_real
from .spectra import power_law_spectrum, power_law_tail, power_law_target, power_law_task

__all__ = [
    "Prediction",
    "predict",
    "kappa_real",
    "kappa_at_zero",
    "power_law_spectrum",
    "power_law_target",
    "power_law_task",
    "power_law_tail",
]
