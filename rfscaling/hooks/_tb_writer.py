"""The TensorBoard writer process of :class:`rfscaling.hooks.tensorboard.TensorBoardHook`.

Everything the child process runs lives here, and this module imports nothing from torch and
nothing from ``rfscaling`` (numpy at import; tensorboard's event-file writer and protobufs,
matplotlib and PIL when first used), so that the child is ready in about a second instead of
~2.7 s (torch and ``torch.utils.tensorboard`` took most of it). The parent starts the child
with ``runpy.run_path`` on this FILE, so neither ``rfscaling/__init__.py`` nor
``rfscaling/hooks/__init__.py`` (which imports torch) runs there; ``run_name`` is
:data:`CHILD_RUN_NAME`, which runs :func:`_writer_main`.

* The message protocol: length-prefixed pickles on the child's stdin (:func:`_read_message`)
  of the dataclasses below. The parent pickles them under this module's package name
  (``rfscaling.hooks._tb_writer``); the child resolves those names to its own copies of the
  classes (:class:`_Unpickler`) instead of importing the package.
* The per-mode image (:class:`_Renderer`, :class:`_ModeFrame`: numpy and matplotlib only),
  used by the parent's ``mode_image`` and by the child alike, so both give the same pixels.
* :class:`_EventWriter`, the subset of ``torch.utils.tensorboard.SummaryWriter`` the hook uses,
  writing the same events (see its docstring) through tensorboard's own ``EventFileWriter``.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Mapping, Optional

import numpy as np

QUANTITIES = ("E_g", "bias", "variance", "train_error")
LAYOUT = {
    "DMFT vs experiment": {q: ["Multiline", [f"{q}/empirical", f"{q}/theory"]] for q in QUANTITIES},
    "error bands": {"E_g +- SE": ["Margin", ["E_g/empirical", "E_g/lower", "E_g/upper"]]},
}
_HEADER = struct.Struct("<Q")  # length prefix of each pickled message on the child's stdin
CHILD_RUN_NAME = "__rfscaling_tb_writer__"  # run_path(<this file>, run_name=...) runs the writer
_PACKAGE_NAME = "rfscaling.hooks._tb_writer"  # the name the parent pickles the messages under


# -- messages ------------------------------------------------------------------------------------
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
    def of(snapshot) -> _ImageData:
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


_MESSAGE_TYPES = {c.__name__: c for c in (_ModeErrors, _ImageData, _Eval, _HParams)}


class _Unpickler(pickle.Unpickler):
    """Resolves the message classes pickled by the parent (``rfscaling.hooks._tb_writer.X``) to
    this module's copies, so that the child, which runs this file as ``__rfscaling_tb_writer__``,
    does not import the ``rfscaling`` package (and torch with it)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in (_PACKAGE_NAME, __name__) and name in _MESSAGE_TYPES:
            return _MESSAGE_TYPES[name]
        return super().find_class(module, name)


def _read_message(stream: BinaryIO):
    """The next message on ``stream``; None at EOF (or a message cut short by the parent's death)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return _Unpickler(io.BytesIO(data)).load()


# -- the event writer ------------------------------------------------------------------------------
class _EventWriter:
    """What the hook used of ``torch.utils.tensorboard.SummaryWriter``, without torch: the same
    events (contents, tags, steps; wall times and file names differ) through tensorboard's
    ``EventFileWriter`` (max_queue 10, flush_secs 120, no filename suffix, as torch's defaults).

    * construction: the event file, whose first event is the file version (EventFileWriter);
      with ``purge_step``, ``Event(step=purge_step, file_version="brain.Event:2")`` and
      ``Event(step=purge_step, session_log=START)``, as ``SummaryWriter._get_file_writer``;
    * :meth:`add_scalar`: old style ``simple_value`` (torch's default ``new_style=False``);
    * :meth:`add_image`: ``dataformats="HWC"``, a PNG written by PIL as ``summary.image``;
    * :meth:`add_custom_scalars`: ``summary.custom_scalars`` (tag ``custom_scalars__config__``);
    * :meth:`add_hparams`: ``summary.hparams``'s experiment, session start and session end
      summaries, then each metric as a scalar, through a second writer in
      ``os.path.join(log_dir, run_name)``, closed at once;
    * :meth:`flush`, :meth:`close` (close flushes; a second close is a no-op).
    """

    def __init__(self, log_dir: str | os.PathLike, purge_step: Optional[int] = None,
                 max_queue: int = 10, flush_secs: int = 120, filename_suffix: str = "") -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.log_dir = str(log_dir)
        self._args = (max_queue, flush_secs, filename_suffix)
        self._writer: Any = EventFileWriter(self.log_dir, max_queue, flush_secs, filename_suffix)
        if purge_step is not None:
            self._add_event(Event(step=purge_step, file_version="brain.Event:2"))
            self._add_event(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def get_logdir(self) -> str:
        return self.log_dir

    def _add_event(self, event, step: Optional[int] = None) -> None:
        if self._writer is None:
            raise OSError("Writer is closed")
        event.wall_time = time.time()
        if step is not None:
            event.step = int(step)
        self._writer.add_event(event)

    def add_summary(self, summary, global_step: Optional[int] = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._add_event(Event(summary=summary), global_step)

    def add_scalar(self, tag: str, scalar_value: Any, global_step: Optional[int] = None) -> None:
        self.add_summary(scalar_summary(tag, scalar_value), global_step)

    def add_image(self, tag: str, img: np.ndarray, global_step: Optional[int] = None,
                  dataformats: str = "HWC") -> None:
        self.add_summary(image_summary(tag, img, dataformats), global_step)

    def add_custom_scalars(self, layout: Mapping) -> None:
        self.add_summary(custom_scalars_summary(layout))

    def add_hparams(self, hparam_dict: dict, metric_dict: dict, run_name: Optional[str] = None,
                    global_step: Optional[int] = None) -> None:
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionary.")
        exp, ssi, sei = hparams_summaries(hparam_dict, metric_dict)
        if not run_name:
            run_name = str(time.time())
        w_hp = _EventWriter(os.path.join(self.log_dir, run_name), None, *self._args)
        try:
            w_hp.add_summary(exp, global_step)
            w_hp.add_summary(ssi, global_step)
            w_hp.add_summary(sei, global_step)
            for k, v in metric_dict.items():
                w_hp.add_scalar(k, v, global_step)
        finally:
            w_hp.close()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.flush()
        self._writer.close()
        self._writer = None


def scalar_summary(tag: str, value: Any):
    """``torch.utils.tensorboard.summary.scalar`` (old style): ``simple_value``."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    arr = np.array([value]) if np.isscalar(value) else np.asarray(value)
    arr = arr.squeeze()
    if arr.ndim != 0:
        raise AssertionError(f"Tensor should contain one element (0 dimensions). "
                             f"Was given size: {arr.size} and {arr.ndim} dimensions.")
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(arr))])


def image_summary(tag: str, img: np.ndarray, dataformats: str = "HWC"):
    """``torch.utils.tensorboard.summary.image`` for a 3-d numpy image: uint8 values as they are,
    floats scaled by 255, clipped to [0, 255], encoded as PNG by PIL."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    img = np.asarray(img)
    fmt = dataformats.upper()
    if len(set(fmt)) != len(fmt) or len(fmt) != 3 or set(fmt) != set("HWC") or img.ndim != 3:
        raise ValueError(f"a 3-d image in an arrangement of H, W, C is expected, got shape {img.shape} "
                         f"and dataformats {dataformats!r}")
    img = img.transpose([fmt.find(c) for c in "HWC"])
    if img.shape[2] == 1:
        img = np.concatenate([img, img, img], 2)
    scale = 1 if img.dtype == np.uint8 else 255
    img = (img.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)
    height, width, channel = img.shape
    pil = Image.fromarray(img)
    pil = pil.resize((width, height), Image.Resampling.LANCZOS)  # rescale=1, as torch does
    out = io.BytesIO()
    pil.save(out, format="PNG")
    return Summary(value=[Summary.Value(tag=tag, image=Summary.Image(
        height=height, width=width, colorspace=channel, encoded_image_string=out.getvalue()))])


def custom_scalars_summary(layout: Mapping):
    """``torch.utils.tensorboard.summary.custom_scalars``: the layout as a string tensor."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import layout_pb2

    categories = []
    for k, v in layout.items():
        charts = []
        for chart_name, chart_metadata in v.items():
            tags = chart_metadata[1]
            if chart_metadata[0] == "Margin":
                if len(tags) != 3:
                    raise AssertionError("len(tags) != 3")
                mgcc = layout_pb2.MarginChartContent(
                    series=[layout_pb2.MarginChartContent.Series(value=tags[0], lower=tags[1], upper=tags[2])])
                chart = layout_pb2.Chart(title=chart_name, margin=mgcc)
            else:
                chart = layout_pb2.Chart(title=chart_name, multiline=layout_pb2.MultilineChartContent(tag=tags))
            charts.append(chart)
        categories.append(layout_pb2.Category(title=k, chart=charts))
    layout_pb = layout_pb2.Layout(category=categories)
    smd = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    tensor = TensorProto(dtype="DT_STRING", string_val=[layout_pb.SerializeToString()],
                         tensor_shape=TensorShapeProto())
    return Summary(value=[Summary.Value(tag="custom_scalars__config__", tensor=tensor, metadata=smd)])


def hparams_summaries(hparam_dict: dict, metric_dict: dict):
    """``torch.utils.tensorboard.summary.hparams`` (no discrete domains): the experiment,
    session start and session end summaries. As there, bools count as numbers (``int`` is
    tested first), None values are skipped, and other types are refused."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import (
        DataType,
        Experiment,
        HParamInfo,
        MetricInfo,
        MetricName,
        Status,
    )
    from tensorboard.plugins.hparams.metadata import (
        EXPERIMENT_TAG,
        PLUGIN_DATA_VERSION,
        PLUGIN_NAME,
        SESSION_END_INFO_TAG,
        SESSION_START_INFO_TAG,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import (
        HParamsPluginData,
        SessionEndInfo,
        SessionStartInfo,
    )

    if not isinstance(hparam_dict, dict) or not isinstance(metric_dict, dict):
        raise TypeError("parameter: hparam_dict and metric_dict should be dictionaries, nothing logged.")
    hps = []
    ssi = SessionStartInfo()
    for k, v in hparam_dict.items():
        if v is None:
            continue
        if isinstance(v, (int, float)):
            ssi.hparams[k].number_value = v
            hps.append(HParamInfo(name=k, type=DataType.Value("DATA_TYPE_FLOAT64"), domain_discrete=None))
        elif isinstance(v, str):
            ssi.hparams[k].string_value = v
            hps.append(HParamInfo(name=k, type=DataType.Value("DATA_TYPE_STRING"), domain_discrete=None))
        else:
            raise ValueError("value should be one of int, float, str, bool, or torch.Tensor")  # noqa: TRY004  as torch

    def summary(tag, content):
        smd = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME,
                                                                      content=content.SerializeToString()))
        return Summary(value=[Summary.Value(tag=tag, metadata=smd)])

    ssi = summary(SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=ssi, version=PLUGIN_DATA_VERSION))
    exp = Experiment(hparam_infos=hps, metric_infos=[MetricInfo(name=MetricName(tag=k)) for k in metric_dict])
    exp = summary(EXPERIMENT_TAG, HParamsPluginData(experiment=exp, version=PLUGIN_DATA_VERSION))
    sei = SessionEndInfo(status=Status.Value("STATUS_SUCCESS"))
    sei = summary(SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=sei, version=PLUGIN_DATA_VERSION))
    return exp, ssi, sei


# -- the writer process --------------------------------------------------------------------------
def _writer_main() -> None:
    """Entry point of the writer process: read messages on stdin, write them with an
    :class:`_EventWriter`, flush and close at "stop" or EOF; exit 0, or 1 after printing the
    first failure as ``error: <repr>`` on stderr (later messages are drained)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    with contextlib.suppress(AttributeError, ValueError, OSError):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM to the process group, likewise
    stream = sys.stdin.buffer
    error: Optional[BaseException] = None
    writer: Optional[_EventWriter] = None
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
                writer = _EventWriter(body["log_dir"], purge_step=body["purge_step"])
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


# -- the per-mode image ----------------------------------------------------------------------------
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



if __name__ == CHILD_RUN_NAME:
    _writer_main()
