"""TensorBoard hook: empirical curves overlaid on their DMFT predictions.

* Scalars ``<q>/empirical`` and ``<q>/theory`` for q in E_g, bias, variance, train_error, and a
  custom-scalars layout (Multiline charts) that puts each pair on one chart;
  the x-axis is the evaluation index (log-spaced times), ``time`` is logged as its own scalar.
* An image ``modes/error`` at every evaluation: per-mode error against mode index, log-log,
  empirical as points, theory as a line (matplotlib Agg).
* Hyperparameters and final metrics through the hparams plugin at the end.

All writer work (the tensorboard import, the SummaryWriter, scalars, rendering and encoding the
image, hparams, flush/close) runs on one background daemon thread fed by a bounded queue, so
that logging never blocks training: ``on_eval`` only copies a few floats and the per-mode arrays
off the snapshot (back-pressure only if the writer falls 64 evaluations behind). The queue is
drained, flushed and closed at the end of a run and by :meth:`TensorBoardHook.close`, which
``simulate`` calls when a run ends abnormally (divergence, an exception, SIGTERM/SIGINT). A
failure on the writer thread is re-raised on the training thread by the next call.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from rfscaling.hooks.base import RunInfo, RunSummary, Snapshot, StopRequest

__all__ = ["TensorBoardHook", "QUANTITIES"]

QUANTITIES = ("E_g", "bias", "variance", "train_error")
LAYOUT = {
    "DMFT vs experiment": {q: ["Multiline", [f"{q}/empirical", f"{q}/theory"]] for q in QUANTITIES},
    "error bands": {"E_g +- SE": ["Margin", ["E_g/empirical", "E_g/lower", "E_g/upper"]]},
}
_STOP = object()  # sentinel: drain, flush, close


def _hparam_value(v: Any):
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


@dataclass(frozen=True)
class _ModeErrors:
    mode_error: np.ndarray


@dataclass(frozen=True)
class _ImageData:
    """What :meth:`TensorBoardHook.mode_image` reads from a snapshot (``time``,
    ``metrics.mode_error``, ``theory.mode_error``), copied so that the snapshot can be freed."""

    time: float
    metrics: _ModeErrors
    theory: Optional[_ModeErrors]

    @staticmethod
    def of(snapshot: Snapshot) -> _ImageData:
        th = snapshot.theory
        th_err = None if th is None or th.mode_error is None else _ModeErrors(np.array(th.mode_error, copy=True))
        return _ImageData(float(snapshot.time), _ModeErrors(np.array(snapshot.metrics.mode_error, copy=True)), th_err)


@dataclass(frozen=True)
class _Eval:
    index: int
    scalars: tuple  # ((tag, value), ...) in the order they are written
    image: Optional[_ImageData]


@dataclass(frozen=True)
class _HParams:
    hparams: dict
    metrics: dict


class TensorBoardHook:
    queue_size = 64  # evaluations the writer may fall behind before on_eval waits

    def __init__(self, log_dir: str | os.PathLike, hparams: Mapping[str, Any] | None = None,
                 image_every: int = 1, extra_metrics: Optional[callable] = None) -> None:
        self.log_dir = str(log_dir)
        self.hparams = {k: _hparam_value(v) for k, v in (hparams or {}).items()}
        self.image_every = max(1, int(image_every))
        self.extra_metrics = extra_metrics  # () -> dict of final metrics for the hparams table
        self.writer = None  # the SummaryWriter, created and used on the writer thread only
        self._fig = None
        self._render_lock = threading.Lock()
        self._queue: Optional[queue.Queue] = None
        self._thread: Optional[threading.Thread] = None
        self._stop_sent = False
        self._error: Optional[BaseException] = None
        self._reported = False  # the failure was raised by on_eval already

    # -- training thread -------------------------------------------------------------------
    def on_start(self, info: RunInfo) -> None:
        self.close()  # a previous run of this hook, if any
        self.eigenvalues = np.asarray(info.eigenvalues)
        purge = info.start_index if info.start_index > 0 else None
        self._error, self._reported, self._stop_sent = None, False, False
        self._queue = queue.Queue(maxsize=self.queue_size)
        self._thread = threading.Thread(target=self._work, args=(self._queue, purge), daemon=True,
                                        name=f"TensorBoardHook({self.log_dir})")
        self._thread.start()

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        if self._thread is None:
            raise RuntimeError("TensorBoardHook.on_eval called before on_start (or after close)")
        self._raise_if_failed()
        i = int(snapshot.index)
        m, th = snapshot.metrics, snapshot.theory
        emp = {"E_g": m.generalization_error, "bias": m.bias, "variance": m.variance, "train_error": m.train_error}
        thv = {} if th is None else {"E_g": th.generalization_error, "bias": th.bias, "variance": th.variance,
                                     "train_error": th.train_error}
        scalars = []
        for q in QUANTITIES:
            if math.isfinite(emp[q]):
                scalars.append((f"{q}/empirical", float(emp[q])))
            if q in thv and math.isfinite(thv[q]):
                scalars.append((f"{q}/theory", float(thv[q])))
        if math.isfinite(m.generalization_error_se):
            scalars.append(("E_g/lower", float(m.generalization_error - m.generalization_error_se)))
            scalars.append(("E_g/upper", float(m.generalization_error + m.generalization_error_se)))
        if math.isfinite(snapshot.time):
            scalars.append(("time", float(snapshot.time)))
        image = _ImageData.of(snapshot) if i % self.image_every == 0 else None
        self._put(_Eval(i, tuple(scalars), image))
        return None

    def on_end(self, summary: RunSummary) -> None:
        if self._thread is None:
            return
        err = self._error
        if err is not None:  # the hparams cannot be written: say so even if on_eval did before
            with contextlib.suppress(Exception):
                self.close()
            raise self._wrap(err) from err
        try:
            m = summary.final.metrics
            metrics = {"hparam/E_g_final": m.generalization_error, "hparam/train_error_final": m.train_error}
            if self.extra_metrics is not None:  # reads other hooks' state: here, not on the writer
                metrics.update({f"hparam/{k}": float(v) for k, v in self.extra_metrics().items()
                                if v is not None and isinstance(v, (int, float)) and math.isfinite(v)})
            metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
            if self.hparams:
                self._put(_HParams(dict(self.hparams), metrics))
        except BaseException:
            with contextlib.suppress(Exception):
                self.close()
            raise
        self.close()

    def close(self) -> None:
        """Write everything queued so far, flush and close the writer; wait for it (idempotent).

        Re-raises a failure of the writer thread as a RuntimeError unless on_eval did already."""
        thread = self._thread
        if thread is None:
            return
        if not self._stop_sent:
            with contextlib.suppress(RuntimeError):  # raised only if the writer thread has exited
                self._put(_STOP)
            self._stop_sent = True
        thread.join()
        self._thread = self._queue = None
        err, self._error = self._error, None
        if err is not None and not self._reported:
            raise self._wrap(err) from err

    # -- either thread -----------------------------------------------------------------------
    def mode_image(self, snapshot: Snapshot) -> np.ndarray:
        """RGB array (H, W, 3): per-mode error vs mode index, log-log.

        Takes a :class:`Snapshot` or the copy of its per-mode errors that ``on_eval`` queues.
        One figure with fixed log-log axes is drawn once; each evaluation only restores its
        background and redraws the two lines and the title (Agg blitting). A fresh figure with
        tight_layout cost ~200 ms per evaluation, this ~3 ms. The axes are rebuilt only when the
        data leave them.
        """
        with self._render_lock:
            return self._render(snapshot)

    def _render(self, snapshot) -> np.ndarray:
        m, th = snapshot.metrics, snapshot.theory
        k = np.arange(1, m.mode_error.size + 1)
        ys = [m.mode_error]
        if th is not None and th.mode_error is not None:
            ys.append(th.mode_error)
        y = np.concatenate(ys)
        y = y[np.isfinite(y) & (y > 0)]
        fig_state = getattr(self, "_fig", None)
        if fig_state is None or fig_state["n"] != k.size or (
                y.size and (y.max() > fig_state["ylim"][1] or y.min() < fig_state["ylim"][0])):
            ref = th.mode_error if th is not None and th.mode_error is not None else m.mode_error
            ref = np.concatenate([ref[np.isfinite(ref) & (ref > 0)], y]) if y.size else np.ones(1)
            self._fig = fig_state = self._build_mode_figure(k.size, (ref.min() * 1e-3, ref.max() * 3))
        pos = m.mode_error > 0
        fig_state["emp"].set_data(k[pos], m.mode_error[pos])
        if th is not None and th.mode_error is not None:
            tpos = th.mode_error > 0
            fig_state["th"].set_data(k[tpos], th.mode_error[tpos])
        fig_state["title"].set_text(f"t = {snapshot.time:.3g}")
        canvas, ax = fig_state["canvas"], fig_state["ax"]
        canvas.restore_region(fig_state["bg"])
        ax.draw_artist(fig_state["th"])
        ax.draw_artist(fig_state["emp"])
        fig_state["fig"].draw_artist(fig_state["title"])
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()

    @staticmethod
    def _build_mode_figure(n_modes: int, ylim) -> dict:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.5), dpi=80)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.8, max(n_modes * 1.25, 2.0))
        ax.set_ylim(*ylim)
        (emp,) = ax.plot([], [], ".", ms=3, color="C0", label="empirical", animated=True)
        (th,) = ax.plot([], [], "-", color="C3", lw=1.2, label="DMFT", animated=True)
        ax.set_xlabel("mode index k")
        ax.set_ylabel("per-mode error e_k")
        ax.legend(loc="lower left", fontsize=8)
        title = ax.set_title(" ", animated=True)
        fig.subplots_adjust(left=0.17, right=0.97, bottom=0.15, top=0.9)
        canvas.draw()
        return dict(fig=fig, ax=ax, canvas=canvas, emp=emp, th=th, title=title, n=n_modes, ylim=ylim,
                    bg=canvas.copy_from_bbox(fig.bbox))

    # -- internals ---------------------------------------------------------------------------
    def _wrap(self, err: BaseException) -> RuntimeError:
        return RuntimeError(f"TensorBoardHook({self.log_dir}): the writer thread failed: {err!r}")

    def _raise_if_failed(self) -> None:
        err = self._error
        if err is not None:
            self._reported = True
            raise self._wrap(err) from err

    def _put(self, item) -> None:
        """Queue ``item``; waits while the queue is full (back-pressure), never on a dead writer."""
        q, thread = self._queue, self._thread
        while True:
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                if not thread.is_alive():
                    raise RuntimeError(f"TensorBoardHook({self.log_dir}): the writer thread has exited") from None

    def _fail(self, err: BaseException) -> None:
        if self._error is None:  # the first failure is the one reported
            self._error = err

    def _work(self, q: queue.Queue, purge: Optional[int]) -> None:
        """Writer thread: create the writer, then write queued items until the sentinel. After
        a failure the rest is drained and dropped (the failure is re-raised by the hook)."""
        writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = self.writer = SummaryWriter(self.log_dir, purge_step=purge)
            writer.add_custom_scalars(LAYOUT)
        except BaseException as e:  # noqa: BLE001  reported on the training thread
            self._fail(e)
        while True:
            item = q.get()
            if item is _STOP:
                break
            if self._error is not None:
                continue
            try:
                if isinstance(item, _Eval):
                    for tag, value in item.scalars:
                        writer.add_scalar(tag, value, item.index)
                    if item.image is not None:
                        writer.add_image("modes/error", self.mode_image(item.image), item.index, dataformats="HWC")
                else:
                    writer.add_hparams(item.hparams, item.metrics, run_name=".")
            except BaseException as e:  # noqa: BLE001
                self._fail(e)
        if writer is not None:
            try:
                writer.flush()
                writer.close()
            except BaseException as e:  # noqa: BLE001
                self._fail(e)
        self.writer = None
