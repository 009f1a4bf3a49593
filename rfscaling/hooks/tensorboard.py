"""TensorBoard hook: empirical curves overlaid on their DMFT predictions.

* Scalars ``<q>/empirical`` and ``<q>/theory`` for q in E_g, bias, variance, train_error, and a
  custom-scalars layout (Multiline charts) that puts each pair on one chart;
  the x-axis is the evaluation index (log-spaced times), ``time`` is logged as its own scalar.
* An image ``modes/error`` at every evaluation: per-mode error against mode index, log-log,
  empirical as points, theory as a line (frame drawn once with matplotlib Agg, data
  rasterised with numpy).
* Hyperparameters and final metrics through the hparams plugin at the end.

All writer work (the tensorboard and matplotlib imports, the event file, scalars, rendering
and encoding the image, hparams, flush/close) runs in a separate child PROCESS, so that logging
never competes with training for the GIL (on a thread it slowed a fast training loop by ~40 %).
The child runs :mod:`rfscaling.hooks._tb_writer` by file path and imports neither torch nor the
``rfscaling`` package: it writes the same events as ``torch.utils.tensorboard.SummaryWriter``
did through tensorboard's own event-file writer, and is ready in about a second (~2.7 s with
torch), which is what ``close`` waits for at the end of a short run.
``on_start`` launches the child (or ``launch`` does, earlier) and returns at once (its imports
run in parallel); ``on_eval``
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
import subprocess
import sys
import tempfile
import threading
import time as _time
from typing import Any, BinaryIO, Mapping, Optional

import numpy as np

from rfscaling.hooks import _tb_writer
from rfscaling.hooks._tb_writer import (  # noqa: F401  the writer process's code, shared with it
    _HEADER,
    LAYOUT,
    QUANTITIES,
    _Eval,
    _HParams,
    _ImageData,
    _ModeErrors,
    _ModeFrame,
    _read_message,
    _Renderer,
    _writer_main,
)
from rfscaling.run.hook import HookBase
from rfscaling.run.records import RunInfo, RunSummary, Snapshot, StopRequest

__all__ = ["TensorBoardHook", "QUANTITIES"]

_STOP = object()  # sentinel on the parent's queue: send "stop", then the feeder exits
# The child runs rfscaling/hooks/_tb_writer.py BY PATH (runpy), so that no package __init__
# (rfscaling.hooks imports torch) and nothing of torch is imported there. SIGINT and SIGTERM are
# ignored before the imports: a Ctrl-C (or a SIGTERM) to the process group must not kill the
# writer before the parent has told it to flush.
_CHILD_CODE = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
               "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               f"import runpy, sys; runpy.run_path(sys.argv[1], run_name={_tb_writer.CHILD_RUN_NAME!r})")


def _hparam_value(v: Any):
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


class TensorBoardHook(HookBase):
    queue_size = 64  # messages the writer may fall behind before on_eval waits (bounded memory)
    close_timeout_s = 120.0  # a writer stuck longer at close (e.g. a hung filesystem) is killed

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
        self._started = False  # on_start has sent "start" to the running process

    # -- training thread -------------------------------------------------------------------
    def launch(self) -> None:
        """Start the writer process now, ahead of ``on_start``: its ~1 s of imports then overlap
        the caller's setup (drawing data, the theory) instead of being waited for by ``close``
        at the end of a short run. Writes nothing until ``on_start``; ``close`` stops it."""
        if self._proc is None:
            self._spawn()

    def on_start(self, info: RunInfo) -> None:
        if self._started:
            self.close()  # a previous run of this hook
        self.eigenvalues = np.asarray(info.eigenvalues)
        purge = info.start_index if info.start_index > 0 else None
        th = info.theory.mode_error if info.theory is not None else None
        th = None if th is None else np.array(th, copy=True)
        self._renderer = _Renderer(th)  # mode_image builds the same frame as the writer, lazily
        if self._proc is None:
            self._spawn()
        self._started = True
        self._queue.put(("start", {"log_dir": os.path.abspath(self.log_dir), "purge_step": purge,
                                   "theory_modes": th}))

    def _spawn(self) -> None:
        """The writer process and its feeder thread; the first message it gets is "start"."""
        self._failure, self._feed_error, self._reported, self._stop_sent = None, None, False, False
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = "1"  # the writer does no numerical work worth a thread pool
        self._stderr = tempfile.TemporaryFile(prefix="rfscaling-tb-")
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, os.path.abspath(_tb_writer.__file__)],
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                          env=env, start_new_session=True)  # Ctrl-C is for the parent
        except BaseException:
            self._stderr.close()
            self._stderr = None
            raise
        self._queue = queue.Queue(maxsize=self.queue_size)
        self._feeder = threading.Thread(target=self._feed, args=(self._queue, self._proc.stdin), daemon=True,
                                        name=f"TensorBoardHook({self.log_dir})")
        self._feeder.start()

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        proc = self._proc
        if proc is None or not self._started:
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
        if not self._put(("eval", _Eval(i, tuple(scalars), image)), _time.monotonic() + self.close_timeout_s) \
                and self._feeder.is_alive():  # full for that long: the writer is stuck
            self._failure = (f"TensorBoardHook({self.log_dir}): the writer process took no message for "
                             f"{self.close_timeout_s:g} s (stuck, e.g. on a hung filesystem)")
            self._reported = True
            raise RuntimeError(self._failure)
        return None

    def on_end(self, summary: RunSummary) -> None:
        if self._proc is None:
            return
        if not self._started:  # launched, never started: nothing to write, just stop it
            self.close()
            return
        try:
            m = summary.final.metrics
            metrics = {"hparam/E_g_final": m.generalization_error, "hparam/train_error_final": m.train_error}
            if self.extra_metrics is not None:  # reads other hooks' state: here, not in the writer
                metrics.update({f"hparam/{k}": float(v) for k, v in self.extra_metrics().items()
                                if v is not None and isinstance(v, (int, float)) and math.isfinite(v)})
            metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
            if self.hparams and not self._stop_sent:
                self._put(("hparams", _HParams(dict(self.hparams), metrics)))
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
        deadline = _time.monotonic() + self.close_timeout_s
        if not self._stop_sent:
            self._stop_sent = self._put(_STOP, deadline)
        self._feeder.join(max(0.0, deadline - _time.monotonic()))
        stuck = self._feeder.is_alive()
        if not stuck:
            with contextlib.suppress(OSError, ValueError):  # BrokenPipeError: the child has exited
                proc.stdin.close()
            try:
                rc = proc.wait(max(0.0, deadline - _time.monotonic()))
            except subprocess.TimeoutExpired:
                stuck = True
        failure = self._failure
        if stuck:  # the pipe breaks with the kill, so the feeder drops the rest and ends
            proc.kill()
            rc = proc.wait()
            if not self._stop_sent:
                self._queue.put(_STOP)
                self._stop_sent = True
            self._feeder.join()
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
            failure = failure or (f"TensorBoardHook({self.log_dir}): the writer process did not finish within "
                                  f"{self.close_timeout_s:g} s of the end of the run and was killed; events not "
                                  "yet flushed are missing")
        if failure is None and rc != 0:
            failure = self._failure_message(rc)
        if failure is None and self._feed_error is not None:
            failure = f"TensorBoardHook({self.log_dir}): the writer process failed: not sent: {self._feed_error!r}"
        with contextlib.suppress(OSError):
            self._stderr.close()
        self._proc = self._stderr = self._queue = self._feeder = None
        self._failure, self._started = None, False
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

    def _put(self, item, deadline: Optional[float] = None) -> bool:
        """Queue ``item``; waits while the writer is ``queue_size`` messages behind (back-pressure
        instead of unbounded memory), never on a feeder that has stopped, nor past ``deadline``
        (``time.monotonic``). Whether it was queued."""
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                if self._feeder is None or not self._feeder.is_alive():
                    return False  # nothing drains the queue any more; close() reports the failure
                if deadline is not None and _time.monotonic() > deadline:
                    return False

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
