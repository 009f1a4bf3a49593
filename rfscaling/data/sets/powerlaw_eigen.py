"""Synthetic power-law task in the kernel eigenbasis: x_{mu k} = sqrt(lam_k) z_{mu k} (drawn by
the eigenfeature model, rfscaling/models/eigenfeature.py)."""

from rfscaling.data.sets import DATASETS, DataSet

DATASETS.register("powerlaw_eigen")(DataSet("powerlaw_eigen"))
