"""rfscaling: DMFT of learning dynamics in random-feature regression, and a torch testbed around it."""

__version__ = "0.1.0"
