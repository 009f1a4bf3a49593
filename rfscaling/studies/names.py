"""Run-directory names that carry the settings, so TensorBoard's run names (paths relative to
``--logdir``) say what each run is.

OmegaConf resolvers used by ``conf/train.yaml``'s ``hydra.run.dir`` and ``hydra.sweep.subdir``:

* ``${zpad:N}`` -- the integer N zero-padded to 3 digits (``${zpad:N,W}``: W digits), so that
  job directories sort in job order (``007`` before ``012``);
* ``${safe_name:TEXT}`` -- TEXT usable as one directory name: path separators and whitespace
  become ``-``, an empty TEXT becomes ``defaults``, and a name over 120 characters is cut to
  111 plus ``~`` and 8 hex digits of its hash (file systems allow 255 bytes per name).

A sweep job's directory is then ``<sweep dir>/<zpad job>_<override_dirname>``, e.g.
``003_data.P=64,seed=1`` (the job's command-line overrides, without the bookkeeping keys listed
in ``hydra.job.config.override_dirname.exclude_keys``), and a single run's
``runs/<date>/<time>_<dynamics>_P<P>_N<N>``.

Registered when this module is imported, i.e. with ``rfscaling.studies``: Hydra imports that
package to instantiate the sweep-index callback of conf/train.yaml, and ``rfscaling.train``
imports it, so the resolvers exist before Hydra resolves a run directory, in the app's own
process and in every launcher's job process.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["zpad", "safe_name", "register_resolvers", "MAX_NAME"]

MAX_NAME = 120
_UNSAFE = re.compile(r"[\s/\\]+")


def zpad(n, width=3) -> str:
    """``n`` zero-padded to ``width`` digits."""
    return f"{int(n):0{int(width)}d}"


def safe_name(text) -> str:
    """``text`` as one directory name (module docstring)."""
    s = _UNSAFE.sub("-", "" if text is None else str(text)).strip("-.")
    if not s:
        return "defaults"
    if len(s) > MAX_NAME:
        s = s[:MAX_NAME - 9] + "~" + hashlib.sha1(s.encode()).hexdigest()[:8]
    return s


def register_resolvers() -> None:
    """Register ``zpad`` and ``safe_name`` with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    for name, fn in (("zpad", zpad), ("safe_name", safe_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
