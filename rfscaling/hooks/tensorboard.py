"""TensorBoard hook: empirical curves overlaid on their DMFT predictions.

* Scalars ``<q>/empirical`` and ``<q>/theory`` for q in E_g, bias, variance, train_error, and a
  custom-scalars layout (Multiline charts) that puts each pair on one chart;
  the x-axis is the evaluation index (log-spaced times), ``time`` is logged as its own scalar.
* An image ``modes/error`` at every evaluation: per-mode error against mode index, log-log,
  empirical as points, theory as a line (frame drawn once with matplotlib Agg, data
  rasterised with numpy).
* Hyperparameters and final metrics through the hparams plugin at the end.

All writer work (the tensorboard and matplotlib imports, the SummaryWriter, scalars, rendering
and encoding the image, hparams, flush/close) runs in a separate child PROCESS, so that logging
never competes with training for the GIL (on a thread it slowed a fast training loop by ~40 %).
``on_start`` launches the child and returns at once (its imports run in parallel); ``on_eval``
only copies a few floats and the per-mode arrays off the snapshot onto an in-process queue, and
one feeder thread pickles them into the child's stdin (length-prefixed messages; a blocking pipe
write releases the GIL). The child ignores SIGINT/SIGTERM (the parent decides) and flushes on
a stop message or at EOF, so it also flushes if the parent dies. Everything accepted is on
disk once :meth:`TensorBoardHook.close` returns: the end of a run calls it, and ``simulate``
calls it when a run ends abnormally (divergence, an exception, SIGTERM/SIGINT). A failure of
the writer process is raised as a RuntimeError by ``close``/``on_end`` (or by ``on_eval`` if
the process has already exited).
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Mapping, Optional

import numpy as np

from rfscaling.hooks.base import RunInfo, RunSummary, Snapshot, StopRequest

__all__ = ["TensorBoardHook", "QUANTITIES"]

QUANTITIES = ("E_g", "bias", "variance", "train_error")
LAYOUT = {
    "DMFT vs experiment": {q: ["Multiline", [f"{q}/empirical", f"{q}/theory"]] for q in QUANTITIES},
    "error bands": {"E_g +- SE": ["Margin", ["E_g/empirical", "E_g/lower", "E_g/upper"]]},
}
_STOP = object()  # sentinel on the parent's queue: send "stop", then the feeder exits
_HEADER = struct.Struct("<Q")  # length prefix of each pickled message on the child's stdin
# SIGINT is ignored before the (slow) imports: a Ctrl-C to the terminal's process group must
# not kill the writer before the parent has told it to flush
_CHILD_CODE = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
               "from rfscaling.hooks.tensorboard import _writer_main; _writer_main()")


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
    ``metrics.mode_error``, ``theory.mode_error``), copied so that the snapshot can be freed
    (and pickled to the writer process)."""

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


class _Renderer:
    """Renders the per-mode image; one per run, in the parent (``mode_image``) and in the writer
    process alike, so both produce the same pixels for the same sequence of snapshots.

    The frame's limits come from the DMFT per-mode errors at all times when they are known (the
    frame is then never rebuilt), else from the first snapshot; it is rebuilt when the data
    leave its limits."""

    def __init__(self, theory_modes: Optional[np.ndarray] = None) -> None:
        self.theory_modes = theory_modes
        self.frame: Optional[_ModeFrame] = None
        self._theory_tried = False
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Build the theory frame and the title's glyph cache now (the writer does it at start)."""
        with self._lock:
            frame = self._theory_frame()
            if frame is not None:
                frame.title(frame.background.copy(), "t = 0123456789.e+-")

    def _theory_frame(self) -> Optional[_ModeFrame]:
        if not self._theory_tried:
            self._theory_tried = True
            if self.theory_modes is not None:
                ref = np.asarray(self.theory_modes, dtype=np.float64)
                ref = ref[np.isfinite(ref) & (ref > 0)]
                if ref.size:
                    self.frame = _ModeFrame(np.shape(self.theory_modes)[-1],
                                            (float(ref.min()) * 1e-3, float(ref.max()) * 3))
        return self.frame

    def render(self, snapshot) -> np.ndarray:
        with self._lock:
            self._theory_frame()
            m, th = snapshot.metrics, snapshot.theory
            n = m.mode_error.size
            th_err = th.mode_error if th is not None and th.mode_error is not None else None
            ys = [m.mode_error] if th_err is None else [m.mode_error, th_err]
            y = np.concatenate(ys)
            y = y[np.isfinite(y) & (y > 0)]
            frame = self.frame
            if frame is None or frame.n != n or (y.size and (y.max() > frame.ylim[1] or y.min() < frame.ylim[0])):
                ref = th_err if th_err is not None else m.mode_error
                ref = np.concatenate([ref[np.isfinite(ref) & (ref > 0)], y]) if y.size else np.ones(1)
                self.frame = frame = _ModeFrame(n, (float(ref.min()) * 1e-3, float(ref.max()) * 3))
            img = frame.background.copy()
            k = np.arange(1, n + 1, dtype=np.float64)
            frame.points(img, k, m.mode_error)
            if th_err is not None:  # on top: the points are dense at high k
                frame.line(img, k, th_err)
            frame.title(img, f"t = {snapshot.time:.3g}")
            return img


class TensorBoardHook:
    def __init__(self, log_dir: str | os.PathLike, hparams: Mapping[str, Any] | None = None,
                 image_every: int = 1, extra_metrics: Optional[callable] = None) -> None:
        self.log_dir = str(log_dir)
        self.hparams = {k: _hparam_value(v) for k, v in (hparams or {}).items()}
        self.image_every = max(1, int(image_every))
        self.extra_metrics = extra_metrics  # () -> dict of final metrics for the hparams table
        self._renderer = _Renderer()
        self._proc: Optional[subprocess.Popen] = None  # the writer process
        self._stderr: Optional[BinaryIO] = None  # its stderr (a temporary file): the error line
        self._queue: Optional[queue.Queue] = None
        self._feeder: Optional[threading.Thread] = None
        self._stop_sent = False
        self._failure: Optional[str] = None  # the writer process's failure, once known
        self._feed_error: Optional[BaseException] = None  # a message that could not be pickled
        self._reported = False  # the failure was raised by on_eval already

    # -- training thread -------------------------------------------------------------------
    def on_start(self, info: RunInfo) -> None:
        self.close()  # a previous run of this hook, if any
        self.eigenvalues = np.asarray(info.eigenvalues)
        purge = info.start_index if info.start_index > 0 else None
        th = info.theory.mode_error if info.theory is not None else None
        th = None if th is None else np.array(th, copy=True)
        self._renderer = _Renderer(th)  # mode_image builds the same frame as the writer, lazily
        self._failure, self._feed_error, self._reported, self._stop_sent = None, None, False, False
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = "1"  # the writer does no numerical work worth a thread pool
        self._stderr = tempfile.TemporaryFile(prefix="rfscaling-tb-")
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)
        except BaseException:
            self._stderr.close()
            self._stderr = None
            raise
        self._queue = queue.Queue()
        self._queue.put(("start", {"log_dir": os.path.abspath(self.log_dir), "purge_step": purge,
                                   "theory_modes": th}))
        self._feeder = threading.Thread(target=self._feed, args=(self._queue, self._proc.stdin), daemon=True,
                                        name=f"TensorBoardHook({self.log_dir})")
        self._feeder.start()

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        proc = self._proc
        if proc is None:
            raise RuntimeError("TensorBoardHook.on_eval called before on_start (or after close)")
        if self._failure is None and proc.poll() is not None:  # exited before being told to stop
            self._failure = self._failure_message(proc.returncode)
        if self._failure is not None:
            self._reported = True
            raise RuntimeError(self._failure)
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
        self._queue.put(("eval", _Eval(i, tuple(scalars), image)))
        return None

    def on_end(self, summary: RunSummary) -> None:
        if self._proc is None:
            return
        try:
            m = summary.final.metrics
            metrics = {"hparam/E_g_final": m.generalization_error, "hparam/train_error_final": m.train_error}
            if self.extra_metrics is not None:  # reads other hooks' state: here, not in the writer
                metrics.update({f"hparam/{k}": float(v) for k, v in self.extra_metrics().items()
                                if v is not None and isinstance(v, (int, float)) and math.isfinite(v)})
            metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
            if self.hparams and not self._stop_sent:
                self._queue.put(("hparams", _HParams(dict(self.hparams), metrics)))
        except BaseException:
            with contextlib.suppress(Exception):
                self.close()
            raise
        failure = self._shutdown()
        if failure is not None:  # the hparams were not written: say so even if on_eval did before
            raise RuntimeError(failure)

    def close(self) -> None:
        """Send everything queued so far to the writer process, which writes, flushes and closes;
        wait for it to exit (idempotent; a no-op before on_start).

        Raises a RuntimeError if the writer process failed, unless on_eval did already."""
        failure = self._shutdown()
        if failure is not None and not self._reported:
            raise RuntimeError(failure)

    # -- either thread -----------------------------------------------------------------------
    def mode_image(self, snapshot: Snapshot) -> np.ndarray:
        """RGB array (H, W, 3) uint8: per-mode error vs mode index, log-log, empirical as
        points, DMFT as a line; the time is in the title.

        Takes a :class:`Snapshot` or the copy of its per-mode errors that ``on_eval`` sends.
        The frame (axes, ticks, labels, legend) is drawn once with matplotlib; each evaluation
        copies it and rasterises the points and the line with numpy into the axes' pixel box,
        and pastes the title from a cache of pre-rendered glyphs (~0.3 ms; matplotlib blitting
        took ~4-20 ms). After ``on_start`` the frame's limits come from the DMFT per-mode errors
        of the run, as in the writer process, so the same snapshots give the same pixels as
        the images on disk. The frame is rebuilt only when the data leave its limits.
        """
        return self._renderer.render(snapshot)

    # -- internals ---------------------------------------------------------------------------
    def _shutdown(self) -> Optional[str]:
        """Stop the feeder and the writer process, wait for both; the failure message or None.
        Interrupted (a signal during the wait), it can be called again and resumes."""
        proc = self._proc
        if proc is None:
            return None
        if not self._stop_sent:
            self._queue.put(_STOP)
            self._stop_sent = True
        self._feeder.join()
        with contextlib.suppress(OSError, ValueError):  # BrokenPipeError: the child has exited
            proc.stdin.close()
        rc = proc.wait()
        failure = self._failure
        if failure is None and rc != 0:
            failure = self._failure_message(rc)
        if failure is None and self._feed_error is not None:
            failure = f"TensorBoardHook({self.log_dir}): the writer process failed: not sent: {self._feed_error!r}"
        with contextlib.suppress(OSError):
            self._stderr.close()
        self._proc = self._stderr = self._queue = self._feeder = None
        self._failure = None
        return failure

    def _failure_message(self, returncode: int) -> str:
        """The writer process's first error line (``error: ...``), else its last line of stderr."""
        text = ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.flush()
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        if errors:
            why = errors[0][len("error: "):]
        elif lines:
            why = f"{lines[-1]} (exit status {returncode})"
        else:
            why = f"exit status {returncode}" + (" (exited before being told to stop)" if returncode == 0 else "")
        return f"TensorBoardHook({self.log_dir}): the writer process failed: {why}"

    def _feed(self, q: queue.Queue, pipe: BinaryIO) -> None:
        """Feeder thread: pickle queued messages into the child's stdin until the stop sentinel.
        Once the pipe is broken (the child has exited) the rest is drained and dropped."""
        broken = False
        while True:
            items = [q.get()]
            with contextlib.suppress(queue.Empty):
                while items[-1] is not _STOP:
                    items.append(q.get_nowait())
            if not broken:
                try:
                    for item in items:
                        try:
                            data = pickle.dumps(("stop", None) if item is _STOP else item,
                                                protocol=pickle.HIGHEST_PROTOCOL)
                        except Exception as e:  # noqa: BLE001  reported by close
                            if self._feed_error is None:
                                self._feed_error = e
                            continue
                        pipe.write(_HEADER.pack(len(data)))
                        pipe.write(data)
                    pipe.flush()
                except (OSError, ValueError):  # BrokenPipeError: the child's failure is its exit status
                    broken = True
            if items[-1] is _STOP:
                return


def _read_message(stream: BinaryIO):
    """The next message on ``stream``; None at EOF (or a message cut short by the parent's death)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


def _writer_main() -> None:
    """Entry point of the writer process (see the module docstring): read messages on stdin,
    write them with a SummaryWriter, flush and close at "stop" or EOF; exit 0, or 1 after
    printing the first failure as ``error: <repr>`` on stderr (later messages are drained)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    with contextlib.suppress(AttributeError, ValueError, OSError):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM to the process group, likewise
    stream = sys.stdin.buffer
    error: Optional[BaseException] = None
    writer = None
    renderer = _Renderer()

    def fail(e: BaseException) -> None:
        nonlocal error
        if error is None:  # the first failure is the one reported
            error = e
            print(f"error: {' '.join(repr(e).split())}", file=sys.stderr, flush=True)

    while True:
        try:
            msg = _read_message(stream)
        except Exception as e:  # noqa: BLE001  an unreadable message: the stream is lost
            fail(e)
            break
        if msg is None or msg[0] == "stop":
            break
        if error is not None:
            continue
        kind, body = msg
        try:
            if kind == "eval":
                for tag, value in body.scalars:
                    writer.add_scalar(tag, value, body.index)
                if body.image is not None:
                    writer.add_image("modes/error", renderer.render(body.image), body.index, dataformats="HWC")
            elif kind == "hparams":
                writer.add_hparams(body.hparams, body.metrics, run_name=".")
            elif kind == "start":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(body["log_dir"], purge_step=body["purge_step"])
                writer.add_custom_scalars(LAYOUT)
                renderer = _Renderer(body["theory_modes"])
                renderer.prepare()
            else:
                raise ValueError(f"unknown message {kind!r}")
        except BaseException as e:  # noqa: BLE001
            fail(e)
    if writer is not None:
        try:
            writer.flush()
            writer.close()
        except BaseException as e:  # noqa: BLE001
            fail(e)
    sys.stderr.flush()
    sys.exit(1 if error is not None else 0)


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

