"""Analysis scripts (figures and tables) built on rfscaling; run modules with ``python -m analysis.<name>``."""
