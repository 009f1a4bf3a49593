"""Data for the testbed: typed ensemble containers, seeds and streams, synthetic eigen-space
sampling, pools of input-space samples, and the registered data sets (``rfscaling/data/sets/``).

The names below are imported on first use (PEP 562), so that a data set's config checks
(``rfscaling.data.sets``) come without torch: the theory app uses them.
"""

from importlib import import_module

_WHERE = {
    "TEACHERS": "eigen", "EigenTask": "eigen", "power_law_eigen_task": "eigen", "sample_eigen_ensemble": "eigen",
    "sample_eigen_validation": "eigen", "EnsembleData": "ensemble", "ValidationData": "ensemble",
    "derive_seed": "ensemble", "make_generator": "ensemble", "resolve_device": "ensemble",
    "resolve_dtype": "ensemble", "binary_labels": "inputs", "pool_ensemble": "inputs", "DATASETS": "sets",
    "DataSet": "sets",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
