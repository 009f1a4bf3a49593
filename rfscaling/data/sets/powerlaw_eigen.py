"""Synthetic power-law task in the kernel eigenbasis: x_{mu k} = sqrt(lam_k) z_{mu k} (drawn by
the eigenfeature model, rfscaling/models/eigenfeature.py). Imports no torch: the theory app
checks its data group with :data:`POWERLAW_EIGEN`."""

from rfscaling.data.sets import DATASETS, DataSet

POWERLAW_EIGEN = DATASETS.register("powerlaw_eigen")(DataSet("powerlaw_eigen"))
