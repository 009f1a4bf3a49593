"""TensorBoard hook: empirical curves overlaid on their DMFT predictions.

* Scalars ``<q>/empirical`` and ``<q>/theory`` for q in E_g, bias, variance, train_error, and a
  custom-scalars layout (Multiline charts) that puts each pair on one chart;
  the x-axis is the evaluation index (log-spaced times), ``time`` is logged as its own scalar.
* An image ``modes/error`` at every evaluation: per-mode error against mode index, log-log,
  empirical as points, theory as a line (frame drawn once with matplotlib Agg, data
  rasterised with numpy).
* Hyperparameters and final metrics through the hparams plugin at the end.

All writer work (the tensorboard import, the SummaryWriter, scalars, rendering and encoding the
image, hparams, flush/close) runs on one background daemon thread fed by a bounded queue, so
that logging never blocks training: ``on_start`` waits for the one-off start (imports, image
frame), then ``on_eval`` only copies a few floats and the per-mode arrays
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
        th = info.theory.mode_error if info.theory is not None else None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(self._queue, purge, th, self._ready), daemon=True,
                                        name=f"TensorBoardHook({self.log_dir})")
        self._thread.start()
        # Wait for the one-off start (tensorboard and matplotlib imports, the image frame, ~1 s of
        # CPU): it holds the GIL, and overlapping it with the first steps slowed them ~2x.
        while not self._ready.wait(0.5) and self._thread.is_alive():
            pass

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
        """RGB array (H, W, 3) uint8: per-mode error vs mode index, log-log, empirical as
        points, DMFT as a line; the time is in the title.

        Takes a :class:`Snapshot` or the copy of its per-mode errors that ``on_eval`` queues.
        The frame (axes, ticks, labels, legend) is drawn once with matplotlib; each evaluation
        copies it and rasterises the points and the line with numpy into the axes' pixel box,
        and pastes the title from a cache of pre-rendered glyphs. Matplotlib blitting took
        ~4-20 ms per image and held the GIL against the training thread; this takes ~0.3 ms.
        The frame is rebuilt only when the data leave its limits.
        """
        with self._render_lock:
            return self._render(snapshot)

    def _render(self, snapshot) -> np.ndarray:
        m, th = snapshot.metrics, snapshot.theory
        n = m.mode_error.size
        th_err = th.mode_error if th is not None and th.mode_error is not None else None
        ys = [m.mode_error] if th_err is None else [m.mode_error, th_err]
        y = np.concatenate(ys)
        y = y[np.isfinite(y) & (y > 0)]
        frame = getattr(self, "_fig", None)
        if frame is None or frame.n != n or (y.size and (y.max() > frame.ylim[1] or y.min() < frame.ylim[0])):
            ref = th_err if th_err is not None else m.mode_error
            ref = np.concatenate([ref[np.isfinite(ref) & (ref > 0)], y]) if y.size else np.ones(1)
            self._fig = frame = _ModeFrame(n, (float(ref.min()) * 1e-3, float(ref.max()) * 3))
        img = frame.background.copy()
        k = np.arange(1, n + 1, dtype=np.float64)
        frame.points(img, k, m.mode_error)
        if th_err is not None:  # on top: the points are dense at high k
            frame.line(img, k, th_err)
        frame.title(img, f"t = {snapshot.time:.3g}")
        return img

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

    def _work(self, q: queue.Queue, purge: Optional[int], theory_modes: Optional[np.ndarray],
              ready: threading.Event) -> None:
        """Writer thread: create the writer and the image frame (limits from the DMFT per-mode
        errors at all times, when known), set ``ready``, then write queued items until the
        sentinel. After a failure the rest is drained and dropped (re-raised by the hook)."""
        writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = self.writer = SummaryWriter(self.log_dir, purge_step=purge)
            writer.add_custom_scalars(LAYOUT)
            if theory_modes is not None:
                ref = np.asarray(theory_modes, dtype=np.float64)
                ref = ref[np.isfinite(ref) & (ref > 0)]
                if ref.size:
                    with self._render_lock:
                        self._fig = _ModeFrame(np.shape(theory_modes)[-1], (float(ref.min()) * 1e-3,
                                                                            float(ref.max()) * 3))
                        self._fig.title(self._fig.background.copy(), "t = 0123456789.e+-")  # glyph cache
        except BaseException as e:  # noqa: BLE001  reported on the training thread
            self._fail(e)
        finally:
            ready.set()
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


class _ModeFrame:
    """The static part of the per-mode image and the data -> pixel map of its log-log axes."""

    COLORS = {"emp": (31, 119, 180), "th": (214, 39, 40)}  # matplotlib C0 and C3

    def __init__(self, n_modes: int, ylim: tuple[float, float]) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        fig = Figure(figsize=(5, 3.5), dpi=80)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        ax.set_xscale("log")
        ax.set_yscale("log")
        self.xlim = (0.8, max(n_modes * 1.25, 2.0))
        self.ylim = ylim
        ax.set_xlim(*self.xlim)
        ax.set_ylim(*ylim)
        ax.set_xlabel("mode index k")
        ax.set_ylabel("per-mode error e_k")
        handles = [Line2D([], [], ls="", marker=".", ms=3, color="C0", label="empirical"),
                   Line2D([], [], ls="-", lw=1.2, color="C3", label="DMFT")]
        ax.legend(handles=handles, loc="lower left", fontsize=8)
        fig.subplots_adjust(left=0.17, right=0.97, bottom=0.15, top=0.9)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        self.background = rgba[..., :3].copy()
        H = self.background.shape[0]
        x0, y0, x1, y1 = ax.get_window_extent().extents  # display coords, origin bottom-left
        # pixel box of the axes' interior, rows from the top
        self.box = (int(np.ceil(x0)) + 1, int(np.floor(x1)) - 1, int(np.ceil(H - y1)) + 1, int(np.floor(H - y0)) - 1)
        self._px = (x0, x1, H - y1, H - y0)
        self.n = n_modes
        self.glyphs: dict[str, np.ndarray] = {}
        self._fig, self._canvas = fig, canvas
        self.title_xy = (int((x0 + x1) / 2), int(H - y1) - 6)  # centre, baseline just above the axes

    def _to_px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, x1, top, bottom = self._px
        lx = (np.log10(x) - np.log10(self.xlim[0])) / (np.log10(self.xlim[1]) - np.log10(self.xlim[0]))
        ly = (np.log10(y) - np.log10(self.ylim[0])) / (np.log10(self.ylim[1]) - np.log10(self.ylim[0]))
        return x0 + lx * (x1 - x0), bottom - ly * (bottom - top)

    def _plot(self, img: np.ndarray, cols: np.ndarray, rows: np.ndarray, color, radius: int) -> None:
        c0, c1, r0, r1 = self.box
        cols, rows = np.rint(cols).astype(np.int64), np.rint(rows).astype(np.int64)
        for dc in range(-radius, radius + 1):
            for dr in range(-radius, radius + 1):
                if dc * dc + dr * dr > radius * radius + radius:
                    continue
                c, r = cols + dc, rows + dr
                ok = (c >= c0) & (c <= c1) & (r >= r0) & (r <= r1)
                img[r[ok], c[ok]] = color

    def points(self, img: np.ndarray, k: np.ndarray, e: np.ndarray) -> None:
        ok = np.isfinite(e) & (e > 0)
        cols, rows = self._to_px(k[ok], e[ok])
        self._plot(img, cols, rows, self.COLORS["emp"], 1)

    def line(self, img: np.ndarray, k: np.ndarray, e: np.ndarray) -> None:
        ok = np.isfinite(e) & (e > 0)
        if ok.sum() < 2:
            return
        cols, rows = self._to_px(k[ok], e[ok])
        # sample each segment at about one point per pixel of its length
        seg = np.maximum(np.ceil(np.hypot(np.diff(cols), np.diff(rows))), 1).astype(np.int64)
        seg = np.minimum(seg, 4 * img.shape[1])
        idx = np.repeat(np.arange(seg.size), seg)
        frac = np.arange(idx.size) - np.repeat(np.cumsum(seg) - seg, seg)
        frac = frac / seg[idx]
        c = cols[idx] + frac * (cols[idx + 1] - cols[idx])
        r = rows[idx] + frac * (rows[idx + 1] - rows[idx])
        self._plot(img, np.append(c, cols[-1]), np.append(r, rows[-1]), self.COLORS["th"], 0)
        self._plot(img, np.append(c, cols[-1]) + 0.5, np.append(r, rows[-1]), self.COLORS["th"], 0)

    def _glyph(self, ch: str) -> np.ndarray:
        """Alpha mask (h, w) of one character at the title's font size, rendered once."""
        g = self.glyphs.get(ch)
        if g is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=(0.3, 0.3), dpi=80)
            canvas = FigureCanvasAgg(fig)
            fig.text(0.1, 0.2, ch if ch != " " else "-", fontsize=12, color="black", alpha=0 if ch == " " else 1)
            canvas.draw()
            a = 255 - np.asarray(canvas.buffer_rgba())[..., 0].astype(np.int16)
            a = np.clip(a, 0, 255).astype(np.uint8)
            cols = np.flatnonzero(a.max(0) > 0)
            width = 4 if ch == " " else None
            if ch == " " or cols.size == 0:
                g = np.zeros((a.shape[0], width or 4), dtype=np.uint8)
            else:
                g = a[:, cols[0]:cols[-1] + 2]
            self.glyphs[ch] = g
        return g

    def title(self, img: np.ndarray, text: str) -> None:
        glyphs = [self._glyph(ch) for ch in text]
        width = sum(g.shape[1] for g in glyphs)
        h = glyphs[0].shape[0]
        col = max(0, self.title_xy[0] - width // 2)
        top = max(0, self.title_xy[1] - int(0.8 * h))
        for g in glyphs:
            hh, ww = min(h, img.shape[0] - top), min(g.shape[1], img.shape[1] - col)
            if hh <= 0 or ww <= 0:
                break
            alpha = g[:hh, :ww, None].astype(np.float32) / 255.0
            region = img[top:top + hh, col:col + ww]
            region[...] = (region * (1 - alpha)).astype(np.uint8)  # black text
            col += g.shape[1]

