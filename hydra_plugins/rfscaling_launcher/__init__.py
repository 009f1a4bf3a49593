"""Hydra plugin: the project's submitit launchers (Hydra finds launchers only under
``hydra_plugins``). The logic is in rfscaling/studies/launcher.py; here the plugin's two
launchers get it mixed in, and their configs the project's options:

* ``hydra/launcher=rfscaling_submitit_slurm`` and ``rfscaling_submitit_local`` (structured
  configs; conf/hydra/launcher/slurm.yaml and submitit_local.yaml select them);
* ``missing_after_min``: minutes to wait for a job that the scheduler no longer knows (a cluster
  without accounting) before it is ``missing``; ``poll_s``: seconds between looks at the jobs;
  ``job_overrides``: overrides added to every job.

Without Hydra's submitit plugin (the ``slurm`` extra) nothing is defined.
"""

from dataclasses import dataclass, field
from typing import List

try:
    from hydra_plugins.hydra_submitit_launcher import config as _conf
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _plugin
except ImportError:  # pragma: no cover - the slurm extra is not installed
    _plugin = None

if _plugin is not None:
    from hydra.core.config_store import ConfigStore

    from rfscaling.studies.launcher import OPTIONS, SweepJobs

    class LocalLauncher(SweepJobs, _plugin.LocalLauncher):
        """submitit's local executor, with the sweep bookkeeping of rfscaling.studies.launcher."""

    class SlurmLauncher(SweepJobs, _plugin.SlurmLauncher):
        """SLURM job arrays, with the sweep bookkeeping of rfscaling.studies.launcher."""

    @dataclass
    class LocalConf(_conf.LocalQueueConf):
        _target_: str = "hydra_plugins.rfscaling_launcher.LocalLauncher"
        max_num_timeout: int = 3  # requeues after the time-limit signal (submitit's local default)
        missing_after_min: float = OPTIONS["missing_after_min"]
        poll_s: float = 1.0
        job_overrides: List[str] = field(default_factory=list)

    @dataclass
    class SlurmConf(_conf.SlurmQueueConf):
        _target_: str = "hydra_plugins.rfscaling_launcher.SlurmLauncher"
        missing_after_min: float = OPTIONS["missing_after_min"]
        poll_s: float = OPTIONS["poll_s"]
        job_overrides: List[str] = field(default_factory=list)

    ConfigStore.instance().store(group="hydra/launcher", name="rfscaling_submitit_local", node=LocalConf(),
                                 provider="rfscaling")
    ConfigStore.instance().store(group="hydra/launcher", name="rfscaling_submitit_slurm", node=SlurmConf(),
                                 provider="rfscaling")
