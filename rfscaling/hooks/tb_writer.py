"""The writer process of :class:`rfscaling.hooks.tensorboard.TensorBoardHook`.

Run by path (``runpy.run_path(<this file>, init_globals={"MESSAGES", "STATUS"}, run_name=RUN_NAME)``)
so that no rfscaling or torch import runs in the child. Messages: ``("start", {log_dir, purge_step,
ylim})``, ``("eval", step, experiment_scalars, dmft_scalars, image)``, ``("hparams", ...)``,
``("stop",)``; written with ``tensorboardX``. On exit it puts None or its first error (one line)
on ``STATUS``; after a failure it drains until "stop", so the parent never blocks. It ignores
SIGINT/SIGTERM (the parent decides when to stop) and flushes by itself if the parent dies. It runs
at the parent's priority: at nice 10 it was starved on a loaded machine.
"""

from __future__ import annotations

import os
import sys

RUN_NAME = "__rfscaling_tb_writer__"  # runpy.run_path(<this file>, run_name=RUN_NAME) runs the writer

if __name__ == RUN_NAME:  # the writer process, before anything else
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole process group
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # so may a SIGTERM; the parent flushes us
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"  # no numerical work worth a thread pool
    # tensorboardX imports torch when it can (~0.8 s, for torch tensors we never send): make
    # that import fail fast, in this process only
    sys.modules.setdefault("torch", None)
    os.environ.setdefault("MPLBACKEND", "Agg")

import queue as _queue  # noqa: E402
from typing import Any, Optional  # noqa: E402

import numpy as np  # noqa: E402

QUANTITIES = ("E_g", "bias", "variance", "train_error")
EXPERIMENT_RUN, DMFT_RUN = "experiment", "dmft"
# Tag names. TensorBoard groups cards by the part of the tag before the first "/", sorts the
# groups by name and expands the first two: the learning curves, then the per-mode image (the
# hparams metrics, "hparam/...", and "time" come after, collapsed).
CURVE_GROUP = "curves"
TAGS = {q: f"{CURVE_GROUP}/{q}" for q in QUANTITIES}
TIME_TAG = "time"
IMAGE_TAG = "error_per_mode"
# the hparams plugin's summary tags and content version (tensorboard.plugins.hparams.metadata,
# not imported here: it pulls in tensorboard's TensorFlow stub, 0.15 s)
_HP_PLUGIN, _HP_VERSION = "hparams", 0
_HP_EXPERIMENT = "_hparams_/experiment"
_HP_SESSION_START = "_hparams_/session_start_info"
_HP_SESSION_END = "_hparams_/session_end_info"


# -- the per-mode image ----------------------------------------------------------------------------
class ModeImage:
    """Per-mode error e_k against the mode index k, log-log: empirical as points (C0), the DMFT
    as a line (C3), the time in the title; an RGB array (H, W, 3) uint8.

    The axes' limits are fixed per run (``ylim``, from the DMFT per-mode errors at all times, as
    the hook computes them; else from the image's own data). The frame (axes, ticks, labels) is
    drawn once per set of limits with matplotlib (Agg) and kept; each image restores it and
    draws only the points, the line, the legend and the title on it (matplotlib blitting: ~5 ms
    instead of ~120 ms for a whole draw). The same calls give the same pixels, in the writer and
    in the parent (``TensorBoardHook.mode_image``)."""

    def __init__(self, ylim: Optional[tuple[float, float]] = None) -> None:
        self.ylim = ylim
        self._fig = None
        self._frame = None  # (limits, saved background)

    def _setup(self):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.5), dpi=80)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("mode index k")
        ax.set_ylabel("per-mode error e_k")
        ax.minorticks_off()
        (emp,) = ax.plot([], [], ls="", marker=".", ms=3, color="C0", label="experiment", animated=True)
        (th,) = ax.plot([], [], ls="-", lw=1.2, color="C3", label="DMFT", animated=True)
        legend = ax.legend(loc="lower left", fontsize=8)
        legend.set_animated(True)  # drawn over the data
        title = fig.text(0.57, 0.93, "", ha="center", va="bottom", fontsize=11, animated=True)
        fig.subplots_adjust(left=0.17, right=0.97, bottom=0.15, top=0.9)
        self._fig, self._ax, self._emp, self._th, self._legend, self._title = fig, ax, emp, th, legend, title

    def render(self, time: float, mode_error: np.ndarray, mode_error_theory: Optional[np.ndarray]) -> np.ndarray:
        if self._fig is None:
            self._setup()
        e = np.asarray(mode_error, dtype=np.float64)
        n = e.size
        k = np.arange(1, n + 1, dtype=np.float64)
        th = None if mode_error_theory is None else np.asarray(mode_error_theory, dtype=np.float64)
        ylim = self.ylim
        if ylim is None:
            y = np.concatenate([e] if th is None else [e, th])
            y = y[np.isfinite(y) & (y > 0)]
            ylim = (float(y.min()) * 0.3, float(y.max()) * 3) if y.size else (1e-3, 1.0)
        limits = ((0.8, max(n * 1.25, 2.0)), tuple(ylim))
        canvas, ax = self._fig.canvas, self._ax
        if self._frame is None or self._frame[0] != limits:
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
            canvas.draw()  # the frame; animated artists are left out
            self._frame = (limits, canvas.copy_from_bbox(self._fig.bbox))
        canvas.restore_region(self._frame[1])
        self._emp.set_data(k, np.where(e > 0, e, np.nan))
        self._th.set_data(k, np.where(th > 0, th, np.nan)) if th is not None else self._th.set_data([], [])
        self._title.set_text(f"t = {time:.3g}")
        for artist in (self._emp, self._th, self._legend):
            ax.draw_artist(artist)
        self._fig.draw_artist(self._title)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def theory_ylim(theory_modes: Optional[np.ndarray]) -> Optional[tuple[float, float]]:
    """The per-run y limits of the per-mode image: the DMFT per-mode errors at all times (T, N),
    from 1/100 of the smallest positive one to 3x the largest; None without them."""
    if theory_modes is None:
        return None
    ref = np.asarray(theory_modes, dtype=np.float64)
    ref = ref[np.isfinite(ref) & (ref > 0)]
    if not ref.size:
        return None
    return float(ref.min()) * 1e-2, float(ref.max()) * 3


# -- the hparams plugin ---------------------------------------------------------------------------
def hparams_summaries(hparams: dict, metrics: list, shown: tuple, status: str) -> list:
    """The hparams plugin's three summaries (experiment, session start, session end) as
    tensorboardX ``Summary`` protos, built with tensorboard's own protobufs (tensorboardX's copy
    of ``api.proto`` lacks ``HParamInfo.differs``).

    ``hparams``: name -> bool, int, float or str, in the order the dashboard lists them;
    ``metrics``: ``(group, tag, display_name)`` in column order (group: the sub-run of the
    session that holds the scalar; the dashboard shows its last value); ``shown``: the
    hyperparameters marked ``differs``, which the HParams dashboard sorts first and displays
    by default (it displays the first five); ``status``: ``STATUS_SUCCESS`` etc."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from tensorboardX.proto.summary_pb2 import Summary as XSummary

    start = plugin_data_pb2.SessionStartInfo()
    infos = []
    for name, v in hparams.items():
        if isinstance(v, bool):
            start.hparams[name].bool_value = v
            kind = api_pb2.DATA_TYPE_BOOL
        elif isinstance(v, (int, float)):
            start.hparams[name].number_value = float(v)
            kind = api_pb2.DATA_TYPE_FLOAT64
        else:
            start.hparams[name].string_value = str(v)
            kind = api_pb2.DATA_TYPE_STRING
        infos.append(api_pb2.HParamInfo(name=name, type=kind, differs=name in shown))
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=[
        api_pb2.MetricInfo(name=api_pb2.MetricName(group=g, tag=t), display_name=d) for g, t, d in metrics])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status))

    def summary(tag, **data):
        content = plugin_data_pb2.HParamsPluginData(version=_HP_VERSION, **data).SerializeToString()
        md = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=_HP_PLUGIN, content=content))
        pb = Summary(value=[Summary.Value(tag=tag, metadata=md)])
        return XSummary.FromString(pb.SerializeToString())

    return [summary(_HP_EXPERIMENT, experiment=experiment), summary(_HP_SESSION_START, session_start_info=start),
            summary(_HP_SESSION_END, session_end_info=end)]


# -- the writer ------------------------------------------------------------------------------------
class _Writers:
    """The run's tensorboardX writers, opened as needed."""

    def __init__(self, log_dir: str, purge_step: Optional[int], ylim) -> None:
        from tensorboardX import SummaryWriter

        self._cls = SummaryWriter
        self.log_dir = log_dir
        self.purge_step = purge_step
        self.images = ModeImage(ylim)
        self.runs: dict[str, Any] = {}
        self.run(EXPERIMENT_RUN)  # a log dir that cannot be written fails at the start

    def run(self, name: str, purge_step: Any = "run"):
        w = self.runs.get(name)
        if w is None:
            purge = self.purge_step if purge_step == "run" else purge_step
            w = self.runs[name] = self._cls(os.path.join(self.log_dir, name) if name else self.log_dir,
                                            purge_step=purge, flush_secs=30)
        return w

    def eval(self, step: int, experiment: tuple, dmft: tuple, image) -> None:
        for run, scalars in ((EXPERIMENT_RUN, experiment), (DMFT_RUN, dmft)):
            if scalars:
                w = self.run(run)
                for tag, value in scalars:
                    w.add_scalar(tag, value, step)
        if image is not None:
            self.run(EXPERIMENT_RUN).add_image(IMAGE_TAG, self.images.render(*image), step, dataformats="HWC")

    def hparams(self, hparams: dict, metrics: list, scalars: tuple, step: int, status: str, shown: tuple) -> None:
        # written whole at the end: a rerun (resume) replaces it (purge from step 0)
        session = self.run("", purge_step=0)
        for s in hparams_summaries(hparams, metrics, shown, status):
            session.file_writer.add_summary(s, 0)
        for tag, value in scalars:
            session.add_scalar(tag, value, step)

    def close(self) -> None:
        errors = []
        for w in self.runs.values():
            try:
                w.close()  # flushes
            except BaseException as e:  # noqa: BLE001  close the others, report the first
                errors.append(e)
        self.runs = {}
        if errors:
            raise errors[0]


def writer_main(messages, status) -> None:
    """The writer process: messages from ``messages`` until "stop" (or the parent's death), then
    flush and close; None or the first error on ``status``; exit status 0 or 1."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    error: Optional[str] = None
    writers: Optional[_Writers] = None

    def fail(e: BaseException) -> None:
        nonlocal error
        if error is None:
            error = " ".join(repr(e).split())

    while True:
        try:
            msg = messages.get(timeout=1.0)
        except _queue.Empty:
            if parent is not None and not parent.is_alive():
                break  # the parent died without "stop": write what we have
            continue
        except BaseException as e:  # noqa: BLE001  an unreadable message: the stream is lost
            fail(e)
            break
        kind = msg[0]
        if kind == "stop":
            break
        if error is not None:
            continue  # drain until "stop", so the parent never waits on a full queue
        try:
            if kind == "eval":
                writers.eval(*msg[1:])
            elif kind == "start":
                body = msg[1]
                writers = _Writers(body["log_dir"], body["purge_step"], body["ylim"])
            elif kind == "hparams":
                writers.hparams(*msg[1:])
            else:
                raise ValueError(f"unknown message {kind!r}")
        except BaseException as e:  # noqa: BLE001
            fail(e)
    if writers is not None:
        try:
            writers.close()
        except BaseException as e:  # noqa: BLE001
            fail(e)
    status.put(error)
    sys.exit(1 if error is not None else 0)


if __name__ == RUN_NAME:
    writer_main(globals()["MESSAGES"], globals()["STATUS"])
