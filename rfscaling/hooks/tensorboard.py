"""TensorBoard hook: the experiment and the DMFT as two runs (``experiment/``, ``dmft/``) under
the same tags, a per-mode image, and an hparams session; layout, tags and the time axis
(``step = round(100 log10(t / 1e-3))``) are documented in docs/testbed.md, "TensorBoard".

All writing happens in a ``multiprocessing`` spawn child fed through a bounded queue
(:mod:`rfscaling.hooks.tb_writer`, run by file path: no torch, no rfscaling), because on a thread
logging slowed a fast training loop by ~40 % (GIL). Everything accepted is on disk once
:meth:`TensorBoardHook.close` returns; ``simulate`` and ``atexit`` call it on abnormal ends. A
failed writer is raised as RuntimeError; one stuck for ``close_timeout_s`` (a hung filesystem) is
killed and reported instead of hanging the run.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import multiprocessing
import os
import queue
import runpy
import signal
import sys
import time as _time
import types
from typing import Any, Callable, Mapping, Optional

import numpy as np

from rfscaling.hooks import tb_writer
from rfscaling.hooks.tb_writer import DMFT_RUN, EXPERIMENT_RUN, IMAGE_TAG, QUANTITIES, TAGS, TIME_TAG
from rfscaling.run.hook import HookBase
from rfscaling.run.records import RunInfo, RunSummary, Snapshot, StopRequest

__all__ = ["TensorBoardHook", "QUANTITIES", "T_REF", "STEPS_PER_DECADE", "INF_STEP", "MAX_IMAGES",
           "SHOWN_HPARAMS", "time_step", "time_steps", "image_indices", "step_time",
           "EXPERIMENT_RUN", "DMFT_RUN", "IMAGE_TAG", "TAGS", "TIME_TAG"]

#: Reference time of the step axis: round(100 log10(t / T_REF)) is 0 at t = T_REF (steps of t > 0
#: are at least 1; step 0 is t = 0).
T_REF = 1e-3
STEPS_PER_DECADE = 100
#: Step of t = inf (the Bayes posterior's single evaluation): as if t = 1e12.
INF_STEP = 1500
#: Images per run (TensorBoard's default keeps 10 per tag; ``--samples_per_plugin images=N``).
MAX_IMAGES = 10
#: Hyperparameters the HParams dashboard shows by default (marked ``differs``; it shows five).
SHOWN_HPARAMS = ("dynamics.name", "dynamics.temperature", "dynamics.weight_decay", "data.P", "model.N")
#: extra_metrics keys (the early-stopping hook's) -> hparams metric tags
_EXTRA_NAMES = {"E_g": "E_g_early_stopped", "stopping_time": "t_early_stopped"}
#: column titles of the hparams metrics (others: the tag without "hparam/")
_DISPLAY = {"hparam/E_g_early_stopped": "E_g early-stopped", "hparam/E_g_optimum_dmft": "E_g optimum (DMFT)",
            "hparam/t_early_stopped": "t early-stopped", "hparam/t_optimum_dmft": "t optimum (DMFT)"}


def time_step(t: float) -> int:
    """The TensorBoard step of gradient-flow time ``t``: ``round(100 log10(t / 1e-3))``, at least
    1 for t > 0; 0 for t = 0; :data:`INF_STEP` for t = inf."""
    t = float(t)
    if t == 0.0:
        return 0
    if t == math.inf:
        return INF_STEP
    if not t > 0.0:
        raise ValueError(f"t={t}: a time must be >= 0")
    return max(1, int(round(STEPS_PER_DECADE * math.log10(t / T_REF))))


def step_time(step: int) -> float:
    """The time a step stands for, ``1e-3 * 10**(step / 100)`` (to 1.2 %; step 0 is t = 0, step 1
    also any t below 1.035e-3; the ``time`` scalar has the exact value)."""
    return T_REF * 10.0 ** (step / STEPS_PER_DECADE)


def time_steps(times) -> np.ndarray:
    """Steps of a run's evaluation times (non-decreasing): :func:`time_step` of each, but where
    that would not exceed the previous evaluation's step, the previous step + 1 (strictly
    increasing, so no evaluation replaces another in TensorBoard)."""
    out = np.empty(len(times), dtype=np.int64)
    prev = -1
    for i, t in enumerate(times):
        s = time_step(t)
        if s <= prev:
            s = prev + 1
        out[i] = prev = s
    return out


def image_indices(times, every: int = 1, max_images: int = MAX_IMAGES) -> list[int]:
    """The evaluations that get an image: of those whose index is a multiple of ``every``, all if
    there are at most ``max_images``, else t = 0 (when evaluated) and the rest picked log-evenly
    in time: for targets evenly spaced in log t between the first and last positive time, the
    nearest evaluation not yet taken. Sorted."""
    times = np.asarray(times, dtype=np.float64)
    cand = list(range(0, len(times), max(1, int(every))))
    if len(cand) <= max_images or max_images <= 0:
        return cand if max_images > 0 else []
    chosen = [i for i in cand if times[i] == 0][:1]
    pos = [i for i in cand if 0 < times[i] < math.inf]
    k = max_images - len(chosen)
    if pos and k > 0:
        logt = np.log10(times[pos])
        left = list(range(len(pos)))
        for target in np.linspace(logt[-1], logt[0], k)[::-1]:  # k = 1: the last
            j = min(left, key=lambda m: abs(logt[m] - target))
            left.remove(j)
            chosen.append(pos[j])
    return sorted(chosen)


@contextlib.contextmanager
def _plain_spawn():
    """Start a spawn child as if from a plain interpreter.

    * A spawn child re-imports the parent's ``__main__`` module before running its target
      (multiprocessing's "safe importing of the main module"); for ``python -m rfscaling.train``
      that is the whole app, torch and Hydra (~1.7 s before the writer could start). The writer
      needs nothing from it (its code runs by file path), so an empty module stands in for
      ``__main__`` while the child starts.
    * The child also sets the parent's global start method; in a joblib (loky) worker, where
      Hydra's joblib launcher runs a sweep's jobs, that is "loky", unknown to a fresh
      interpreter (the child would fail with "cannot find context for 'loky'"): such a method
      is replaced by "spawn" while the child starts.

    Both are restored as soon as ``Process.start`` returns."""
    main = sys.modules.get("__main__")
    method = multiprocessing.get_start_method(allow_none=True)
    foreign = method not in (None, *multiprocessing.get_all_start_methods())
    sys.modules["__main__"] = types.ModuleType("__main__")
    if foreign:
        multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        if foreign:
            multiprocessing.set_start_method(method, force=True)
        if main is None:
            del sys.modules["__main__"]
        else:
            sys.modules["__main__"] = main


def _hparam_value(v: Any):
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


class TensorBoardHook(HookBase):
    queue_size = 64  # messages the writer may fall behind before on_eval waits (bounded memory)
    close_timeout_s = 120.0  # a writer stuck longer (e.g. a hung filesystem) is killed
    worker_file = tb_writer.__file__  # what the writer process runs (by path)

    def __init__(self, log_dir: str | os.PathLike, hparams: Mapping[str, Any] | None = None,
                 image_every: int = 1, extra_metrics: Optional[Callable[[], dict]] = None,
                 max_images: int = MAX_IMAGES) -> None:
        self.log_dir = str(log_dir)
        self.hparams = {k: _hparam_value(v) for k, v in (hparams or {}).items() if v is not None}
        self.image_every = max(1, int(image_every))
        self.max_images = max(0, int(max_images))
        self.extra_metrics = extra_metrics  # () -> dict of final metrics (early stopping) for HParams
        self._proc: Optional[multiprocessing.process.BaseProcess] = None  # the writer process
        self._queue = None  # multiprocessing.Queue to it
        self._status = None  # multiprocessing.SimpleQueue from it: its error line or None
        self._stop_sent = False
        self._failure: Optional[str] = None  # the writer process's failure, once known
        self._reported = False  # the failure was raised by on_eval already
        self._started = False  # on_start has sent "start" to the running process
        self._steps = np.zeros(0, dtype=np.int64)
        self._images: frozenset = frozenset()
        self._ylim = None
        self._theory_optimum: Optional[tuple[float, float]] = None
        self._has_theory = False
        self._renderer = None

    # -- training thread -------------------------------------------------------------------
    def launch(self) -> None:
        """Start the writer process now, ahead of ``on_start``: its imports then overlap the
        caller's setup (drawing data, the theory) instead of being waited for by ``close`` at
        the end of a short run. Writes nothing until ``on_start``; ``close`` stops it."""
        if self._proc is None:
            self._spawn()

    def on_start(self, info: RunInfo) -> None:
        if self._started:
            self.close()  # a previous run of this hook
        times = np.asarray(info.eval_times, dtype=np.float64)
        self._steps = time_steps(times)
        self._images = frozenset(image_indices(times, self.image_every, self.max_images))
        th = info.theory
        self._has_theory = th is not None
        self._ylim = tb_writer.theory_ylim(None if th is None else th.mode_error)
        self._renderer = None
        self._theory_optimum = None
        if th is not None:
            eg = np.asarray(th.generalization_error, dtype=np.float64)
            if np.isfinite(eg).any():
                j = int(np.nanargmin(eg))
                self._theory_optimum = (float(eg[j]), float(np.asarray(th.times)[j]))
        purge = int(self._steps[info.start_index]) if 0 < info.start_index < len(self._steps) else None
        if self._proc is None:
            self._spawn()
        self._started = True
        self._put(("start", {"log_dir": os.path.abspath(self.log_dir), "purge_step": purge, "ylim": self._ylim}))

    def _spawn(self) -> None:
        """The writer process, its message queue and its status queue."""
        self._failure, self._reported, self._stop_sent = None, False, False
        ctx = multiprocessing.get_context("spawn")
        self._queue = ctx.Queue(self.queue_size)
        self._status = ctx.SimpleQueue()
        self._proc = ctx.Process(
            target=runpy.run_path, args=(str(self.worker_file),),
            kwargs={"init_globals": {"MESSAGES": self._queue, "STATUS": self._status},
                    "run_name": tb_writer.RUN_NAME},
            name=f"TensorBoardHook({self.log_dir})", daemon=True)
        with _plain_spawn():
            self._proc.start()
        atexit.register(self._close_at_exit)

    def _step(self, snapshot: Snapshot) -> int:
        i = int(snapshot.index)
        return int(self._steps[i]) if 0 <= i < len(self._steps) else time_step(snapshot.time)

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        proc = self._proc
        if proc is None or not self._started:
            raise RuntimeError("TensorBoardHook.on_eval called before on_start (or after close)")
        if self._failure is None and proc.exitcode is not None:  # exited before being told to stop
            self._failure = self._failure_message(proc.exitcode)
        if self._failure is not None:
            self._reported = True
            raise RuntimeError(self._failure)
        m, th = snapshot.metrics, snapshot.theory
        t = float(snapshot.time)
        exp = [(TAGS[q], float(v)) for q, v in zip(QUANTITIES, (m.generalization_error, m.bias, m.variance,
                                                                 m.train_error)) if math.isfinite(v)]
        dmft = [] if th is None else [
            (TAGS[q], float(v)) for q, v in zip(QUANTITIES, (th.generalization_error, th.bias, th.variance,
                                                             th.train_error)) if math.isfinite(v)]
        if math.isfinite(t):
            exp.append((TIME_TAG, t))
            if dmft:
                dmft.append((TIME_TAG, t))
        image = None
        if int(snapshot.index) in self._images:
            th_modes = None if th is None or th.mode_error is None else np.array(th.mode_error, dtype=np.float64)
            image = (t, np.array(m.mode_error, dtype=np.float64), th_modes)
        if not self._put(("eval", self._step(snapshot), tuple(exp), tuple(dmft), image),
                         _time.monotonic() + self.close_timeout_s) and proc.exitcode is None:
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
            if self.hparams and not self._stop_sent:
                self._put(("hparams", *self._hparams_message(summary)))
        except BaseException:
            with contextlib.suppress(Exception):
                self.close()
            raise
        failure = self._shutdown()
        if failure is not None:  # the hparams were not written: say so even if on_eval did before
            raise RuntimeError(failure)

    def _hparams_message(self, summary: RunSummary) -> tuple:
        """(hparams, metric columns, hparams-run scalars, step, status, shown) for the writer."""
        final = summary.final
        metrics = [(EXPERIMENT_RUN, TAGS["E_g"], "E_g final")]
        if self._has_theory:
            metrics.append((DMFT_RUN, TAGS["E_g"], "E_g final (DMFT)"))
        scalars = []
        extra = dict(self.extra_metrics() or {}) if self.extra_metrics is not None else {}
        values = {}
        for k, v in extra.items():
            if _finite(v) and not isinstance(v, bool):
                values[f"hparam/{_EXTRA_NAMES.get(k, k)}"] = float(v)
        if self._theory_optimum is not None:
            values["hparam/E_g_optimum_dmft"], values["hparam/t_optimum_dmft"] = self._theory_optimum
        order = ["hparam/E_g_early_stopped", "hparam/E_g_optimum_dmft", "hparam/t_early_stopped",
                 "hparam/t_optimum_dmft"]
        for tag in order + sorted(set(values) - set(order)):
            if tag in values:
                scalars.append((tag, values[tag]))
                metrics.append(("", tag, _DISPLAY.get(tag, tag[len("hparam/"):])))
        metrics.append((EXPERIMENT_RUN, TAGS["train_error"], "train error final"))
        if self._has_theory:
            metrics.append((DMFT_RUN, TAGS["train_error"], "train error final (DMFT)"))
        if summary.completed:
            status = "STATUS_SUCCESS"
        elif summary.resumable:
            status = "STATUS_RUNNING"
        else:
            status = "STATUS_FAILURE"
        return dict(self.hparams), metrics, tuple(scalars), self._step(final), status, SHOWN_HPARAMS

    def close(self) -> None:
        """Send everything queued so far to the writer process, which writes, flushes and closes;
        wait for it to exit (idempotent; a no-op before on_start).

        Raises a RuntimeError if the writer process failed, unless on_eval did already."""
        failure = self._shutdown()
        if failure is not None and not self._reported:
            raise RuntimeError(failure)

    # -- either thread -----------------------------------------------------------------------
    def mode_image(self, snapshot: Snapshot) -> np.ndarray:
        """RGB array (H, W, 3) uint8, the image ``on_eval`` has written for this snapshot (same
        frame: after ``on_start`` the y limits come from the run's DMFT per-mode errors)."""
        if self._renderer is None:
            self._renderer = tb_writer.ModeImage(self._ylim)
        th = snapshot.theory
        return self._renderer.render(float(snapshot.time), np.asarray(snapshot.metrics.mode_error, dtype=np.float64),
                                     None if th is None or th.mode_error is None else np.asarray(th.mode_error))

    # -- internals ---------------------------------------------------------------------------
    def _close_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _shutdown(self) -> Optional[str]:
        """Stop the writer process and wait for it; the failure message or None. Interrupted
        (a signal during the wait), it can be called again and resumes."""
        proc = self._proc
        if proc is None:
            return None
        deadline = _time.monotonic() + self.close_timeout_s
        if not self._stop_sent and proc.exitcode is None:
            self._stop_sent = self._put(("stop",), deadline)
        proc.join(max(0.0, deadline - _time.monotonic()))
        failure = self._failure
        killed = proc.exitcode is None
        if killed:
            proc.kill()
            proc.join()
            failure = failure or (f"TensorBoardHook({self.log_dir}): the writer process did not finish within "
                                  f"{self.close_timeout_s:g} s of the end of the run and was killed; events not "
                                  "yet flushed are missing")
        if failure is None and proc.exitcode != 0:
            failure = self._failure_message(proc.exitcode)
        q = self._queue
        q.close()
        if killed or proc.exitcode != 0 or not self._stop_sent:
            q.cancel_join_thread()  # nobody reads what may be left: do not wait for it at exit
        else:
            q.join_thread()
        with contextlib.suppress(Exception):
            self._status.close()
        atexit.unregister(self._close_at_exit)
        self._proc = self._queue = self._status = None
        self._failure, self._started = None, False
        return failure

    def _failure_message(self, exitcode: int) -> str:
        """The writer process's error line, else how it ended."""
        why = None
        with contextlib.suppress(Exception):
            if not self._status.empty():
                why = self._status.get()
        if why is None:
            if exitcode < 0:
                with contextlib.suppress(ValueError):
                    why = f"killed by {signal.Signals(-exitcode).name}"
            why = why or f"exit status {exitcode}" + (" (exited before being told to stop)" if exitcode == 0 else "")
        return f"TensorBoardHook({self.log_dir}): the writer process failed: {why}"

    def _put(self, item, deadline: Optional[float] = None) -> bool:
        """Queue ``item``; waits while the writer is ``queue_size`` messages behind (back-pressure
        instead of unbounded memory), never on a process that has exited, nor past ``deadline``
        (``time.monotonic``). Whether it was queued."""
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                if self._proc is None or self._proc.exitcode is not None:
                    return False  # nothing drains the queue any more; close() reports the failure
                if deadline is not None and _time.monotonic() > deadline:
                    return False
