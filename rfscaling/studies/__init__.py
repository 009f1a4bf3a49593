"""Studies: sweep bookkeeping and readers for the experiment presets (conf/experiment/).

* :mod:`rfscaling.studies.sweep` -- the Hydra callback that writes ``<sweep dir>/index.csv`` after
  a multirun (registered in conf/train.yaml), and ``python -m rfscaling.studies.sweep DIR`` to
  rebuild an index;
* :mod:`rfscaling.studies.runs` -- run directories of a sweep into pandas (:func:`load_runs`,
  :func:`load_curves`) and averages over seeds (:func:`seed_average`, :func:`curve_average`);
* :mod:`rfscaling.studies.theory` -- the DMFT for a run's configuration on any time grid
  (:func:`condition`, :func:`curve`, :func:`optimal_stop`, :func:`flat_window`);
* :mod:`rfscaling.studies.names` -- the resolvers that name run and job directories
  (``zpad``, ``safe_name``; registered on import, before Hydra resolves a run directory).

The figures and tables are made by ``python -m analysis <study>`` (analysis/ in the repository).
Light imports only: Hydra loads this package to instantiate the callback in every job.
"""

from rfscaling.studies import names  # noqa: F401  registers the resolvers of conf/train.yaml
from rfscaling.studies.runs import condition_keys, curve_average, load_curves, load_runs, seed_average

__all__ = ["load_runs", "load_curves", "condition_keys", "seed_average", "curve_average"]
