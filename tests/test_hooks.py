"""Hooks: the observer protocol (immutable snapshots, log-spaced evaluations, stop requests),
the eigenmode hook's files, early stopping, checkpoints with bit-identical resume, TensorBoard."""

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch

from rfscaling.config import DynamicsConfig
from rfscaling.data import make_generator, power_law_eigen_task, sample_eigen_ensemble, sample_eigen_validation
from rfscaling.dynamics import EulerDynamics, State
from rfscaling.hooks import (
    METRICS_COLUMNS,
    BudgetHook,
    CheckpointHook,
    EarlyStoppingHook,
    EigenmodeHook,
    TensorBoardHook,
    load_checkpoint,
)
from rfscaling.run import (HookBase, RunInfo, RunSummary, Snapshot, StopRequest, TheoryCurve, log_spaced_steps, measure,
                           simulate)
from rfscaling.theory import predict

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(N=60, P=20, D=3, R=3, noise=0.3, T=0.0, seed=0, n_steps=300, n_evals=12):
    task = power_law_eigen_task(N, 1.0, 1.0, label_noise=noise, teacher="random")
    data = sample_eigen_ensemble(task, P, D, R, make_generator(seed, "data"), dtype=F64)
    dyn = EulerDynamics(data, DynamicsConfig(temperature=T))
    steps = log_spaced_steps(n_steps, n_evals)
    times = steps * dyn.dt
    pred = predict(task.eigenvalues, task.target_second_moment, P, times, label_noise=noise, temperature=T)
    info = RunInfo(task.eigenvalues, times, steps, dyn.dt, D, R, P, {"data.P": P}, TheoryCurve.from_prediction(pred))
    return task, data, dyn, info


class Recorder(HookBase):
    def __init__(self, stop_at=None):
        self.calls, self.snaps, self.stop_at = [], [], stop_at

    def on_start(self, info):
        self.calls.append(("start", info))

    def on_eval(self, snap):
        self.calls.append(("eval", snap))
        self.snaps.append(snap)
        if self.stop_at is not None and snap.index == self.stop_at:
            return StopRequest("recorder says stop")
        return None

    def on_end(self, summary):
        self.calls.append(("end", summary))


def _run(dyn, data, info, hooks, seed=1, state=None):
    state = state or dyn.init(make_generator(seed, "dyn"))
    res = simulate(dyn, state, info, hooks, target_weights=data.target_weights, eigenvalues=data.eigenvalues,
                   progress=False, chunk=7)
    return res.state, res.summary


def test_log_spaced_steps():
    s = log_spaced_steps(1000, 20)
    assert s[0] == 0 and s[-1] == 1000 and np.all(np.diff(s) > 0)
    r = s[2:] / s[1:-1]
    assert r.max() <= 2.0 and len(s) <= 21
    assert list(log_spaced_steps(3, 10)) == [0, 1, 2, 3]


def test_protocol_snapshots_are_immutable_and_log_spaced():
    _, data, dyn, info = _setup(T=0.01)
    rec, rec2 = Recorder(), Recorder()
    state, summary = _run(dyn, data, info, [rec, rec2])
    kinds = [c[0] for c in rec.calls]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("eval") == len(info.eval_steps)
    assert all(isinstance(c[1], Snapshot) for c in rec.calls if c[0] == "eval")
    assert [s.step for s in rec.snaps] == list(info.eval_steps)
    np.testing.assert_allclose([s.time for s in rec.snaps], info.eval_times, rtol=1e-12)
    # both hooks get the same snapshot object; it is frozen and owns its tensors
    assert all(a is b for a, b in zip(rec.snaps, rec2.snaps))
    snap = rec.snaps[3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.time = 0.0
    before = snap.weights.clone()
    state.weights.add_(1.0)  # mutate the live state: the snapshot must not change
    assert torch.equal(snap.weights, before)
    assert snap.weights.data_ptr() != rec.snaps[4].weights.data_ptr()
    assert summary.completed and summary.stop_reason == "completed"
    assert summary.compute_macs == 2 * 20 * 60 * 9 * int(info.eval_steps[-1])
    # theory point attached at the right time
    assert snap.theory.generalization_error == pytest.approx(info.theory.generalization_error[3])


def test_stop_request_halts_with_reason():
    _, data, dyn, info = _setup()
    rec = Recorder(stop_at=4)
    state, summary = _run(dyn, data, info, [rec])
    assert len(rec.snaps) == 5 and state.step == info.eval_steps[4]
    assert summary.stop_reason == "recorder says stop" and not summary.completed


def test_eigenmode_hook_files(tmp_path):
    _, data, dyn, info = _setup()
    hook = EigenmodeHook(tmp_path)
    _run(dyn, data, info, [hook])
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == METRICS_COLUMNS and len(rows) == len(info.eval_steps)
    for r in rows:
        assert float(r["bias"]) + float(r["variance"]) == pytest.approx(float(r["E_g"]), rel=1e-9, abs=1e-15)
        assert math.isfinite(float(r["E_g_theory"]))
    z = np.load(tmp_path / "modes.npz")
    T, N = len(rows), 60
    for k in ("mode_error", "mode_error_theory", "mode_bias", "mode_variance", "mode_bias_theory"):
        assert z[k].shape == (T, N)
    np.testing.assert_allclose(z["times"], info.eval_times)
    np.testing.assert_allclose(z["mode_error"].sum(1), [float(r["E_g"]) for r in rows], rtol=1e-9)
    np.testing.assert_allclose(z["eigenvalues"], info.eigenvalues)


def test_early_stopping_records_optimum_and_halts_only_when_asked():
    task, data, dyn, info = _setup(N=200, P=40, D=4, R=2, noise=0.5, n_steps=3000, n_evals=30)
    val = sample_eigen_validation(task, data, 400, make_generator(9))
    watch = EarlyStoppingHook(val, patience=3, halt=False)
    _run(dyn, data, info, [watch])
    res = watch.result()
    vals = np.array([h["validation_error"] for h in watch.history])
    assert len(vals) == len(info.eval_steps)  # did not halt
    i = int(np.argmin(vals))
    assert res["stopping_time"] == pytest.approx(info.eval_times[i])
    assert res["E_g"] == pytest.approx(watch.history[i]["E_g"])
    assert res["patience_exhausted_at_time"] is not None  # label noise: an interior optimum
    assert 0 < res["stopping_time"] < info.eval_times[-1]
    assert res["theory_optimum_time"] < info.eval_times[-1]
    # validation error tracks E_g + label noise
    eg = np.array([h["E_g"] for h in watch.history])
    assert np.all(np.abs(vals - (eg + 0.5)) < 0.25 * (eg + 0.5))
    halting = EarlyStoppingHook(val, patience=3, halt=True)
    rec = Recorder()
    _, summary = _run(dyn, data, info, [halting, rec])
    assert summary.stop_reason.startswith("early stopping")
    assert rec.snaps[-1].time == pytest.approx(res["patience_exhausted_at_time"])


# (temperature, steps, evaluations, chunk, evaluations before the stop). Noise-free with the
# default chunks, resuming after evaluation 23 of 30: the remaining calls alone would plan
# stride 32, the whole run plans 16 (asserted below), so a plan from the resume point breaks it.
# Langevin, stopping after 4: evaluation 3 is inside the first evaluation group (0..4), so the
# budget stop rolls the state back and the resumed run measures evaluation 4 alone in its slot
# (3 rows instead of 15: this BLAS rounds rows of so small a product differently).
RESUME_CASES = [(0.02, 400, 15, 7, 5), (0.0, 4000, 30, None, 24), (0.02, 400, 15, 7, 4)]


@pytest.mark.parametrize("T, n_steps, n_evals, chunk, stop_after", RESUME_CASES)
def test_checkpoint_resume_is_bit_identical(tmp_path, T, n_steps, n_evals, chunk, stop_after):
    """Run A uninterrupted; run B stops after ``stop_after`` evaluations (a resumable budget
    stop, i.e. a 'kill' after a checkpoint), then a fresh process-like setup (a new integrator)
    resumes from the checkpoint. Final weights, generator state and every recorded row are
    bit-identical (CPU), the validation errors of early stopping included. Noise-free, the runs
    are strided: ``simulate`` plans the stride for the whole run, not for the calls left after
    the checkpoint. A stop inside an evaluation group goes back to that evaluation, and a run
    resumed inside a group measures each evaluation in its slot of the group as before."""
    from rfscaling.dynamics import choose_stride
    from rfscaling.run import advance_calls, eval_groups

    task, data, dyn, info = _setup(T=T, n_steps=n_steps, n_evals=n_evals)
    val = sample_eigen_validation(task, data, 50, make_generator(9))

    def run(d, hooks, state=None, inf=info):
        state = state or d.init(make_generator(1, "dyn"))
        res = simulate(d, state, inf, hooks, target_weights=data.target_weights, eigenvalues=data.eigenvalues,
                       progress=False, chunk=chunk)
        return res.state, res.summary

    eig_a, es_a = EigenmodeHook(), EarlyStoppingHook(val)
    state_a, _ = run(dyn, [eig_a, es_a])

    eig_b, es_b = EigenmodeHook(), EarlyStoppingHook(val)
    ck = CheckpointHook(tmp_path, every=2, stateful={"eigenmode": eig_b, "es": es_b}, identity="run-x")
    state_b, _ = run(dyn, [eig_b, es_b, BudgetHook(max_evals=stop_after), ck])
    assert state_b.step == info.eval_steps[stop_after - 1]  # ended at the stop, not at the group's end
    group = next(g for g in eval_groups(info.eval_steps, chunk) if g.first <= stop_after - 1 < g.first + g.size)
    if (T, stop_after) == (0.02, 4):
        assert group.first < stop_after - 1 < group.first + group.size - 1  # the case is inside a group
    ckpt = load_checkpoint(tmp_path, "run-x")
    assert ckpt["index"] == stop_after - 1 and not ckpt["finished"]
    with pytest.raises(ValueError, match="different configuration"):
        load_checkpoint(tmp_path, "run-y")

    eig_c, es_c = EigenmodeHook(), EarlyStoppingHook(val)
    eig_c.load_state_dict(ckpt["hooks"]["eigenmode"])
    es_c.load_state_dict(ckpt["hooks"]["es"])
    gen = make_generator(123)  # any seed: the state is restored
    gen.set_state(ckpt["rng_state"])
    state = State(ckpt["weights"], ckpt["step"], ckpt["time"], gen)
    info_c = dataclasses.replace(info, start_index=ckpt["index"] + 1)
    ck2 = CheckpointHook(tmp_path, every=2, stateful={"eigenmode": eig_c, "es": es_c}, identity="run-x")
    fresh = EulerDynamics(data, dyn.params)
    state_c, summary = run(fresh, [eig_c, es_c, ck2], state=state, inf=info_c)
    assert summary.completed
    assert fresh.stride == dyn.stride and (fresh.stride > 1) == (T == 0)
    if T == 0:  # the case is sensitive: planning from the checkpoint on would pick another stride
        calls = advance_calls(info.eval_steps, chunk)
        done = np.cumsum(calls) <= int(ckpt["step"])
        left = [n for n, d in zip(calls, done) if not d]
        assert choose_stride(left, data.n_samples, data.n_replicas, fresh.form) != fresh.stride
    assert torch.equal(state_c.weights, state_a.weights)
    assert torch.equal(state_c.generator.get_state(), state_a.generator.get_state())
    assert eig_c.rows == eig_a.rows and es_c.history == es_a.history
    assert load_checkpoint(tmp_path)["finished"]


def test_tensorboard_hook_writes_overlays_images_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, data, dyn, info = _setup(n_evals=6)
    tb = TensorBoardHook(tmp_path / "tb", hparams={"data.P": 20, "dynamics.name": "gradient_flow"})
    _run(dyn, data, info, [tb])
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    n = len(info.eval_steps)
    for q in ("E_g", "bias", "variance", "train_error"):
        emp, th = acc.Scalars(f"{q}/empirical"), acc.Scalars(f"{q}/theory")
        assert len(emp) == n and len(th) == n
    np.testing.assert_allclose([e.value for e in acc.Scalars("E_g/theory")],
                               info.theory.generalization_error, rtol=1e-6)
    assert len(acc.Images("modes/error")) == n
    img = acc.Images("modes/error")[0]
    assert img.width > 100 and img.height > 100
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    plugins = {}
    for path in sorted((tmp_path / "tb").rglob("events.out.tfevents.*")):
        for ev in EventFileLoader(str(path)).Load():
            for v in ev.summary.value:
                plugins.setdefault(v.metadata.plugin_data.plugin_name, set()).add(v.tag)
    assert "custom_scalars" in plugins, "custom scalar layout missing"
    assert "hparams" in plugins, "hparams missing"
    # the layout pairs each empirical curve with its theory on one Multiline chart
    from tensorboard.plugins.custom_scalar import layout_pb2

    layouts = [ev for path in (tmp_path / "tb").rglob("events.out.tfevents.*") for ev in EventFileLoader(str(path)).Load()
               for v in ev.summary.value if v.metadata.plugin_data.plugin_name == "custom_scalars"]
    assert layouts
    value = [v for v in layouts[0].summary.value if v.metadata.plugin_data.plugin_name == "custom_scalars"][0]
    layout = layout_pb2.Layout()
    layout.ParseFromString(value.tensor.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["E_g"] == ["E_g/empirical", "E_g/theory"]


# -- TensorBoard writer process ------------------------------------------------------------------
def _tb_snapshots(n_evals=12):
    """Snapshots of a real run (metrics computed, as simulate's hooks share them) and its info."""
    _, data, dyn, info = _setup(n_evals=n_evals)
    rec = Recorder()
    _run(dyn, data, info, [rec])
    for s in rec.snaps:
        s.metrics  # noqa: B018  computed once per evaluation, shared by all hooks
    return info, rec.snaps


def _tb_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _tb_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("TensorBoardHook(")]


def _summary_of(snap):
    return RunSummary(final=snap, stop_reason="completed", wall_time_s=0.0, compute_macs=0, completed=True)


def test_tensorboard_close_writes_every_evaluation_sent_while_the_writer_starts(tmp_path):
    """Evaluations sent right after on_start (the writer process is still importing) are all on
    disk once close() returns: the scalars, and images pixel-equal to in-process renders."""
    import io

    from PIL import Image

    info, snaps = _tb_snapshots()
    tb = TensorBoardHook(tmp_path / "tb", image_every=1)
    tb.on_start(info)
    proc = tb._proc
    for s in snaps:
        assert tb.on_eval(s) is None
    assert proc.poll() is None
    tb.close()
    assert proc.poll() == 0
    # the same sequence rendered in-process by a hook that saw the same on_start info
    expected_images = [tb.mode_image(s) for s in snaps]
    n = len(snaps)
    acc = _tb_events(tmp_path / "tb")
    for tag, get in [("E_g/empirical", lambda s: s.metrics.generalization_error),
                     ("bias/empirical", lambda s: s.metrics.bias),
                     ("variance/empirical", lambda s: s.metrics.variance),
                     ("train_error/empirical", lambda s: s.metrics.train_error),
                     ("E_g/theory", lambda s: s.theory.generalization_error),
                     ("train_error/theory", lambda s: s.theory.train_error),
                     ("E_g/lower", lambda s: s.metrics.generalization_error - s.metrics.generalization_error_se),
                     ("E_g/upper", lambda s: s.metrics.generalization_error + s.metrics.generalization_error_se),
                     ("time", lambda s: s.time)]:
        ev = acc.Scalars(tag)
        assert [e.step for e in ev] == list(range(n)), tag
        np.testing.assert_allclose([e.value for e in ev], [get(s) for s in snaps], rtol=1e-6, err_msg=tag)
    images = acc.Images("modes/error")
    assert [e.step for e in images] == list(range(n))
    for e, want in zip(images, expected_images):
        got = np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))
        np.testing.assert_array_equal(got, want)
    assert not _tb_threads()


def test_tensorboard_image_every_and_theory_frame(tmp_path):
    """image_every skips images; a fresh hook (no on_start) renders the same theory frame only
    after on_start, and mode_image accepts the payload sent to the writer."""
    from rfscaling.hooks.tensorboard import _ImageData

    info, snaps = _tb_snapshots(n_evals=6)
    tb = TensorBoardHook(tmp_path / "tb", image_every=2)
    tb.on_start(info)
    for s in snaps:
        tb.on_eval(s)
    tb.close()
    assert [e.step for e in _tb_events(tmp_path / "tb").Images("modes/error")] == list(range(0, len(snaps), 2))
    np.testing.assert_array_equal(tb.mode_image(_ImageData.of(snaps[-1])), tb.mode_image(snaps[-1]))


def test_tensorboard_on_eval_is_cheap_while_the_writer_starts(tmp_path):
    """Functional check (not a benchmark): on_start does not wait for the writer process's
    start (~1 s of imports in parallel), and on_eval only queues."""
    import time

    info, snaps = _tb_snapshots()
    snaps = snaps[:12]
    tb = TensorBoardHook(tmp_path / "tb")
    t0 = time.perf_counter()
    tb.on_start(info)
    t_start = time.perf_counter() - t0
    spent = []
    for s in snaps:
        t0 = time.perf_counter()
        tb.on_eval(s)
        spent.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    tb.close()
    t_close = time.perf_counter() - t0
    print(f"\non_start {t_start * 1e3:.2f} ms; on_eval per call (ms): "
          f"{', '.join(f'{x * 1e3:.3f}' for x in spent)}; close {t_close * 1e3:.0f} ms")
    assert t_start < 0.2, t_start
    assert len(snaps) == 12 and sum(spent) < 0.05, spent
    assert len(_tb_events(tmp_path / "tb").Images("modes/error")) == 12


def _in_thread(fn, timeout=60.0):
    """Run fn() on a helper thread; fail (instead of hanging) if it does not return in time."""
    import threading

    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "deadlock: the call did not return"
    return out


def _unwritable_dir(tmp_path):
    """A log dir whose parent is a regular file: the SummaryWriter cannot create it."""
    (tmp_path / "a_file").write_text("not a directory")
    return tmp_path / "a_file" / "tb"


def _assert_writer_failure(err):
    assert isinstance(err, RuntimeError) and "TensorBoardHook" in str(err), repr(err)
    assert "the writer process failed" in str(err) and "Error" in str(err), str(err)


def test_tensorboard_writer_failure_surfaces_at_close_without_deadlock(tmp_path):
    info, snaps = _tb_snapshots()
    tb = TensorBoardHook(_unwritable_dir(tmp_path))
    procs = []

    def scenario():
        tb.on_start(info)
        procs.append(tb._proc)
        for s in snaps:
            tb.on_eval(s)  # the writer drains until stop, so no early report here
        with pytest.raises(RuntimeError) as exc:
            tb.close()
        _assert_writer_failure(exc.value)
        tb.close()  # after the report: a no-op
        return True

    out = _in_thread(scenario)
    assert out.get("value") is True, out.get("error")
    assert procs[0].poll() == 1 and not _tb_threads()


def test_tensorboard_on_eval_and_on_end_report_a_dead_writer(tmp_path):
    """A writer process that died (here: killed) is reported by the next on_eval, without
    waiting; close() then returns (the feeder notices the broken pipe) and does not repeat it,
    while on_end always raises (the hparams are lost)."""
    info, snaps = _tb_snapshots(n_evals=4)
    tb = TensorBoardHook(tmp_path / "tb")
    tb.on_start(info)
    proc = tb._proc
    tb.on_eval(snaps[0])
    proc.kill()
    proc.wait()

    def scenario():
        with pytest.raises(RuntimeError, match="the writer process failed"):
            tb.on_eval(snaps[1])
        tb.close()
        return True

    out = _in_thread(scenario)
    assert out.get("value") is True, out.get("error")
    assert not _tb_threads()

    tb2 = TensorBoardHook(_unwritable_dir(tmp_path), hparams={"data.P": 20})
    tb2.on_start(info)
    for s in snaps:
        tb2.on_eval(s)
    out = _in_thread(lambda: tb2.on_end(_summary_of(snaps[-1])))
    _assert_writer_failure(out.get("error"))
    assert tb2._proc is None and not _tb_threads()


def test_tensorboard_writer_failure_surfaces_through_simulate(tmp_path):
    """on_end (or an on_eval) raises the writer's failure, so the run does not end quietly."""
    _, data, dyn, info = _setup(n_evals=6)
    tb = TensorBoardHook(_unwritable_dir(tmp_path), hparams={"data.P": 20})
    out = _in_thread(lambda: _run(dyn, data, info, [tb]))
    _assert_writer_failure(out.get("error"))
    assert tb._proc is None and not _tb_threads()


def test_tensorboard_close_is_idempotent_and_safe_before_start(tmp_path):
    info, snaps = _tb_snapshots(n_evals=4)
    tb = TensorBoardHook(tmp_path / "tb", hparams={"data.P": 20})
    tb.close()
    tb.close()
    tb.on_end(_summary_of(snaps[-1]))
    assert not (tmp_path / "tb").exists()
    with pytest.raises(RuntimeError, match="before on_start"):
        tb.on_eval(snaps[0])
    tb.on_start(info)
    proc = tb._proc
    (thread,) = _tb_threads()
    assert thread.daemon, "the feeder thread must not keep the interpreter alive"
    for s in snaps:
        tb.on_eval(s)
    tb.on_end(_summary_of(snaps[-1]))
    assert proc.poll() == 0, "no writer process remains after on_end"
    assert not thread.is_alive() and not _tb_threads()
    tb.close()
    tb.close()
    assert len(_tb_events(tmp_path / "tb").Scalars("E_g/empirical")) == len(snaps)


def test_tensorboard_launch_ahead_of_on_start(tmp_path):
    """``launch`` starts the writer process early: closed without ``on_start`` it writes nothing
    and exits cleanly; otherwise ``on_start`` uses that process (no second one) and the run's
    events are all written; ``on_eval`` before ``on_start`` is refused either way."""
    info, snaps = _tb_snapshots(n_evals=4)
    tb = TensorBoardHook(tmp_path / "unused", hparams={"data.P": 20})
    tb.launch()
    proc = tb._proc
    with pytest.raises(RuntimeError, match="before on_start"):
        tb.on_eval(snaps[0])
    tb.on_end(_summary_of(snaps[-1]))  # no hparams to a writer that has no log dir: just stops it
    tb.close()
    assert proc.poll() == 0 and not (tmp_path / "unused").exists()

    tb = TensorBoardHook(tmp_path / "tb", hparams={"data.P": 20})
    tb.launch()
    proc = tb._proc
    tb.launch()  # idempotent
    tb.on_start(info)
    assert tb._proc is proc
    for s in snaps:
        tb.on_eval(s)
    tb.on_end(_summary_of(snaps[-1]))
    assert proc.poll() == 0 and not _tb_threads()
    assert len(_tb_events(tmp_path / "tb").Scalars("E_g/empirical")) == len(snaps)


def test_tensorboard_close_kills_a_writer_that_hangs(tmp_path, monkeypatch):
    """A writer process that never finishes (here: it never reads its pipe, as on a hung
    filesystem) does not hang the end of the run: ``close`` kills it after ``close_timeout_s``
    and says so."""
    import time

    import rfscaling.hooks.tensorboard as tbmod

    monkeypatch.setattr(tbmod, "_CHILD_CODE", "import time; time.sleep(600)")
    info, snaps = _tb_snapshots(n_evals=4)
    tb = TensorBoardHook(tmp_path / "tb")
    tb.close_timeout_s = 1.0
    tb.on_start(info)
    proc = tb._proc
    for s in snaps:
        tb.on_eval(s)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish within 1 s"):
        tb.close()
    assert time.monotonic() - t0 < 10 and proc.poll() is not None and not _tb_threads()
    tb.close()  # idempotent afterwards

    # stuck during the run: once the queue and the pipe are full, on_eval fails instead of waiting
    tb = TensorBoardHook(tmp_path / "tb2")
    tb.close_timeout_s, tb.queue_size = 1.0, 2
    tb.on_start(info)
    proc = tb._proc
    big = dataclasses.replace(snaps[0], theory=None)
    with pytest.raises(RuntimeError, match="took no message for 1 s"):
        for _ in range(10_000):  # each message carries an image's data; the pipe holds ~64 KiB
            tb.on_eval(big)
    tb.close()  # kills it (the failure was raised by on_eval already, as for a writer that died)
    assert proc.poll() is not None and not _tb_threads()


def test_mode_image_draws_points_and_line_where_matplotlib_puts_them():
    """The per-mode image is rasterised by hand (numpy, log-log map of the axes box); checked
    against matplotlib's own data -> display transform of the frame's axes: every sampled
    empirical point is a C0 pixel and the DMFT line a C3 pixel within 1 px of where matplotlib
    would draw them, and neither colour is there without the data."""
    from types import SimpleNamespace

    from rfscaling.hooks._tb_writer import _ModeFrame, _Renderer

    n = 200
    k = np.arange(1, n + 1, dtype=np.float64)
    emp, th = 0.5 * k**-2.0, 0.3 * k**-1.2
    snap = SimpleNamespace(metrics=SimpleNamespace(mode_error=emp), theory=SimpleNamespace(mode_error=th), time=1.5)
    r = _Renderer(theory_modes=np.stack([th, 2 * th]))
    img = r.render(snap)
    frame = r.frame
    ax = frame._fig.axes[0]
    H = img.shape[0]

    def near(image, kk, e, color):
        x, y = ax.transData.transform((kk, e))
        row, col = int(round(H - y)), int(round(x))
        patch = image[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3)
        return bool((patch == np.array(color, dtype=np.uint8)).all(1).any())

    C0, C3 = _ModeFrame.COLORS["emp"], _ModeFrame.COLORS["th"]
    for kk in (1, 2, 5, 17, 60, 150):  # points apart from the line (different laws)
        assert near(img, kk, emp[kk - 1], C0) and not near(frame.background, kk, emp[kk - 1], C0), kk
        assert near(img, kk, th[kk - 1], C3) and not near(frame.background, kk, th[kk - 1], C3), kk
        assert not near(img, kk, 10 * emp[kk - 1], C0)  # a decade off: no point there


def test_tensorboard_writer_ignores_sigint_and_flushes_at_eof(tmp_path):
    """A SIGINT (Ctrl-C reaches the whole foreground process group) does not kill the writer;
    if the parent dies without close(), the writer sees EOF on stdin and flushes."""
    import signal
    import time

    info, snaps = _tb_snapshots(n_evals=4)
    tb = TensorBoardHook(tmp_path / "tb")
    tb.on_start(info)
    proc = tb._proc
    for s in snaps:
        tb.on_eval(s)
    time.sleep(1.0)  # past the child's first statement; the feeder has written everything
    assert tb._queue.empty()
    proc.send_signal(signal.SIGINT)
    proc.stdin.close()  # what the parent's death does
    assert proc.wait(timeout=60) == 0
    tb.close()  # the feeder finds the pipe closed: nothing to report
    assert len(_tb_events(tmp_path / "tb").Scalars("E_g/empirical")) == len(snaps)


def test_tensorboard_resume_purges_from_the_restart_index(tmp_path):
    """purge_step is still applied (now in the writer process): a run resumed at index k
    replaces the evaluations >= k of the first one instead of duplicating them."""
    import time

    info, snaps = _tb_snapshots(n_evals=8)
    k = 3
    tb = TensorBoardHook(tmp_path / "tb")
    tb.on_start(info)
    for s in snaps:
        tb.on_eval(s)
    tb.close()
    # event files are read in name order: whole seconds, then a per-process counter compared as
    # text ("10" < "9"), so the resumed run's file must start in a later second
    time.sleep(1.02 - time.time() % 1.0)
    tb2 = TensorBoardHook(tmp_path / "tb")
    tb2.on_start(dataclasses.replace(info, start_index=k))
    for s in snaps[k:]:
        tb2.on_eval(s)
    tb2.close()
    ev = _tb_events(tmp_path / "tb").Scalars("E_g/empirical")
    assert [e.step for e in ev] == list(range(len(snaps)))


# -- the writer process without torch --------------------------------------------------------------
def _event_files(log_dir):
    from pathlib import Path

    return sorted(str(p) for p in Path(log_dir).rglob("events.out.tfevents.*"))


def _write_sequence(make_writer, log_dir, images, layout):
    """One sequence through a SummaryWriter-like class: custom scalars, scalars over six steps,
    two images (the resumed run and the hparams are written by the caller)."""
    w = make_writer(str(log_dir), None)
    w.add_custom_scalars(layout)
    for step in range(6):
        w.add_scalar("E_g/empirical", 1.0 / (step + 1), step)
        w.add_scalar("E_g/theory", 0.9 / (step + 1), step)
        w.add_scalar("time", 0.1 * 2.0**step, step)
    w.add_image("modes/error", images[0], 0, dataformats="HWC")
    w.add_image("modes/error", images[1], 4, dataformats="HWC")
    w.close()


def test_torch_free_event_writer_writes_what_summary_writer_writes(tmp_path):
    """_EventWriter (the writer process's, without torch) against torch's SummaryWriter: the
    same sequence written by both gives the same tags, steps, values, images (PNG bytes and
    dimensions), custom-scalars layout and hparams plugin content, and file by file the same
    events once wall times are cleared."""
    import time

    pytest.importorskip("torch.utils.tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter

    from rfscaling.hooks._tb_writer import LAYOUT, _EventWriter

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8),
              rng.integers(0, 256, size=(20, 11, 3), dtype=np.uint8)]
    hparams = {"data.P": 20, "lr": 0.125, "dynamics.name": "gradient_flow", "flag": True}
    metrics = {"hparam/E_g_final": 0.5, "hparam/train_error_final": 0.25}
    writers = {"torch": lambda d, purge: SummaryWriter(d, purge_step=purge),
               "ours": lambda d, purge: _EventWriter(d, purge_step=purge)}
    for name, make in writers.items():
        _write_sequence(make, tmp_path / name, images, LAYOUT)
    # the resumed run's files must sort after the first ones (whole seconds in the name)
    time.sleep(1.02 - time.time() % 1.0)
    for name, make in writers.items():
        w = make(str(tmp_path / name), 3)
        for step in range(3, 6):
            w.add_scalar("E_g/empirical", 10.0 + step, step)
        w.add_hparams(dict(hparams), dict(metrics), run_name=".")
        w.close()

    def load(name):
        acc = EventAccumulator(str(tmp_path / name), size_guidance={k: 0 for k in
                               ("compressedHistograms", "images", "audio", "scalars", "histograms", "tensors")})
        acc.Reload()
        return acc

    acc = {name: load(name) for name in writers}
    tags = {name: a.Tags() for name, a in acc.items()}
    assert tags["torch"] == tags["ours"]
    assert set(tags["ours"]["scalars"]) == {"E_g/empirical", "E_g/theory", "time", *metrics}
    for tag in tags["ours"]["scalars"]:
        got = {name: [(e.step, e.value) for e in a.Scalars(tag)] for name, a in acc.items()}
        assert got["torch"] == got["ours"], tag
    # the purge applied: steps 3-5 of the first run replaced by the resumed run's
    assert acc["ours"].Scalars("E_g/empirical")[3].value == 13.0
    assert [e.step for e in acc["ours"].Scalars("E_g/empirical")] == list(range(6))
    assert [e.step for e in acc["ours"].Scalars("E_g/theory")] == [0, 1, 2]
    assert [(e.step, e.value) for e in acc["ours"].Scalars("hparam/E_g_final")] == [(0, 0.5)]
    # the images: bytes and dimensions (the second, at step 4, was purged by the resume at 3)
    got = {name: [(e.step, e.width, e.height, e.encoded_image_string) for e in a.Images("modes/error")]
           for name, a in acc.items()}
    assert got["torch"] == got["ours"] and [g[:3] for g in got["ours"]] == [(0, 53, 37)]
    # the custom-scalars layout
    layouts = {}
    for name, a in acc.items():
        (ev,) = a.Tensors("custom_scalars__config__")
        layouts[name] = layout_pb2.Layout.FromString(ev.tensor_proto.string_val[0])
        assert a.SummaryMetadata("custom_scalars__config__").plugin_data.plugin_name == "custom_scalars"
    assert layouts["torch"] == layouts["ours"]
    charts = {c.title: c for cat in layouts["ours"].category for c in cat.chart}
    assert list(charts["E_g"].multiline.tag) == ["E_g/empirical", "E_g/theory"]
    assert charts["E_g +- SE"].margin.series[0].upper == "E_g/upper"
    # the hparams plugin: experiment, session start, session end
    content = {name: a.PluginTagToContent("hparams") for name, a in acc.items()}
    assert content["torch"] == content["ours"] and len(content["ours"]) == 3
    start = plugin_data_pb2.HParamsPluginData.FromString(content["ours"]["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["dynamics.name"].string_value == "gradient_flow"
    assert start.session_start_info.hparams["lr"].number_value == 0.125
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["ours"]["_hparams_/experiment"])
    assert [m.name.tag for m in exp.experiment.metric_infos] == list(metrics)

    # file by file (in the order they were created), the same events but for the wall times
    def events(path):
        out = []
        for ev in EventFileLoader(path).Load():
            ev.wall_time = 0.0
            out.append(ev.SerializeToString())
        return tuple(out)

    files = {name: sorted(_event_files(tmp_path / name), key=lambda p: int(p.rsplit(".", 1)[-1]))
             for name in writers}
    assert len(files["ours"]) == 3
    assert [events(p) for p in files["torch"]] == [events(p) for p in files["ours"]]


def test_tensorboard_writer_process_imports_neither_torch_nor_rfscaling(tmp_path):
    """The hook's child command, fed a start, an evaluation with an image, hparams and stop,
    writes them without importing torch or the rfscaling package (whose __init__s import torch)."""
    import pickle
    import subprocess
    import sys

    from rfscaling.hooks import _tb_writer
    from rfscaling.hooks.tensorboard import _CHILD_CODE

    info, snaps = _tb_snapshots(n_evals=3)
    messages = [("start", {"log_dir": str(tmp_path / "tb"), "purge_step": None,
                           "theory_modes": np.array(info.theory.mode_error)}),
                *[("eval", _tb_writer._Eval(int(s.index), (("E_g/empirical", float(s.metrics.generalization_error)),),
                                            _tb_writer._ImageData.of(s))) for s in snaps],
                ("hparams", _tb_writer._HParams({"data.P": 20}, {"hparam/E_g_final": 0.5})),
                ("stop", None)]
    data = b""
    for m in messages:
        blob = pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL)
        data += _tb_writer._HEADER.pack(len(blob)) + blob
    # the child's own code, reporting its modules at exit
    code = ("try:\n    " + _CHILD_CODE + "\nfinally:\n    import sys\n"
            "    print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rfscaling')))\n")
    out = subprocess.run([sys.executable, "-c", code, _tb_writer.__file__], input=data, capture_output=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "[]", out.stdout.decode()
    acc = _tb_events(tmp_path / "tb")
    assert [e.step for e in acc.Scalars("E_g/empirical")] == [int(s.index) for s in snaps]
    assert len(acc.Images("modes/error")) == len(snaps)
    assert [e.value for e in acc.Scalars("hparam/E_g_final")] == [0.5]


@pytest.mark.parametrize("when", ["on_start", "on_end"])
def test_a_failing_hook_does_not_leave_the_tensorboard_writer_running(tmp_path, when):
    """When another hook raises in on_start or on_end, simulate still closes the TensorBoard hook:
    its writer process has exited and what was sent is on disk."""
    from rfscaling.models import make_problem
    from specs import problem
    from rfscaling.run import RunInfo

    data = make_problem(problem(P=16, N=64, datasets=2, replicas=2)).data
    dyn = EulerDynamics(data, DynamicsConfig())

    class Failing(HookBase):
        def on_start(self, info):
            if when == "on_start":
                raise OSError("disk full")

        def on_eval(self, snapshot):
            return None

        def on_end(self, summary):
            raise OSError("disk full")

    tb = TensorBoardHook(tmp_path / "tb")
    steps = np.array([0, 10, 100])
    info = RunInfo(eigenvalues=data.eigenvalues.double().numpy(), eval_times=steps * dyn.dt, eval_steps=steps,
                   dt=dyn.dt, n_datasets=2, n_replicas=2, n_samples=16, hparams={}, theory=None, start_index=0)
    with pytest.raises(OSError, match="disk full"):
        simulate(dyn, dyn.init(make_generator(0, "dyn")), info, [tb, Failing()], target_weights=data.target_weights,
                 eigenvalues=data.eigenvalues, progress=False)
    assert tb._proc is None or tb._proc.poll() is not None  # closed, not left running
    if when == "on_end":
        assert [e.step for e in _tb_events(tmp_path / "tb").Scalars("E_g/empirical")] == [0, 1, 2]


def test_tensorboard_queue_is_bounded(tmp_path, monkeypatch):
    """A writer that falls behind holds the training thread back instead of queueing without
    bound: with queue_size 3 and a child that cannot start yet, the queue never exceeds 3."""
    import threading

    info, snaps = _tb_snapshots()
    monkeypatch.setattr(TensorBoardHook, "queue_size", 3)
    tb = TensorBoardHook(tmp_path / "tb")
    tb.on_start(info)
    sizes = []

    def produce():
        for s in snaps:
            tb.on_eval(s)
            sizes.append(tb._queue.qsize())

    t = threading.Thread(target=produce)
    t.start()
    t.join(60)
    tb.close()
    assert not t.is_alive() and len(sizes) == len(snaps) and max(sizes) <= 3
    assert len(_tb_events(tmp_path / "tb").Images("modes/error")) == len(snaps)


# --- evaluation groups (rfscaling/dynamics/loop.py) ---------------------------------------------


def test_eval_groups_cover_the_schedule_within_size_and_span():
    from rfscaling.run import eval_groups

    steps = log_spaced_steps(8313, 40)
    for chunk, size in ((415, 8), (7, 8), (415, 3), (10**6, 8), (415, 1)):
        groups = eval_groups(steps, chunk, size)
        assert [i for g in groups for i in range(g.first, g.first + g.size)] == list(range(len(steps)))
        for g, nxt in zip(groups, groups[1:] + [None]):
            last = g.first + g.size - 1
            assert g.size <= size and steps[last] - steps[g.first] <= chunk
            if nxt is not None:  # a group closes only when the next evaluation would break a bound
                assert g.size == size or steps[nxt.first] - steps[g.first] > chunk
    # the app's default schedule: the dense early evaluations are grouped, the late ones are not
    default = eval_groups(steps, 8313 // 20)
    assert default[0].size == 8 and default[-1].size == 1 and len(default) < len(steps) // 2
    with pytest.raises(ValueError, match="size=0"):
        eval_groups(steps, 7, 0)


def _eq_metrics(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b)))


def test_a_group_measures_each_evaluation_in_its_slot():
    """A run resumed inside a group measures the evaluations left in their slots of the full
    stack: the same bits as the uninterrupted run. (A compact stack of the evaluations left has
    fewer rows, and this BLAS rounds small products by their row count and tile position.)"""
    from rfscaling.run.loop import _take, measure_group
    from rfscaling.run import EvalGroup

    _, data, dyn, info = _setup(T=0.02, n_steps=400, n_evals=15)
    state, taken = dyn.init(make_generator(1, "dyn")), []
    for i, s in enumerate(info.eval_steps[:8]):
        state = dyn.advance(state, int(s) - state.step) if s > state.step else state
        taken.append(_take(i, state))
    group = EvalGroup(0, 8)
    full = measure_group(group, taken, dyn, data.target_weights, data.eigenvalues, info.theory)
    for k in range(1, 8):
        part = measure_group(group, taken[k:], dyn, data.target_weights, data.eigenvalues, info.theory)
        assert [s.index for s in part] == list(range(k, 8))
        for a, b in zip(full[k:], part):
            assert torch.equal(a.train_error, b.train_error) and _eq_metrics(a.metrics, b.metrics)
    # against the single-evaluation path: equal to rounding, and the measurement is the direct one
    for s in full:
        one = measure(s.weights, s.target_weights, s.eigenvalues, dyn.train_errors(s.weights))
        torch.testing.assert_close(s.train_error, dyn.train_errors(s.weights), rtol=1e-12, atol=0)
        assert s.metrics.generalization_error == pytest.approx(one.generalization_error, rel=1e-12)
        np.testing.assert_allclose(s.metrics.mode_bias, one.mode_bias, rtol=1e-10, atol=1e-300)
    with pytest.raises(ValueError, match="not in the group"):
        group.slot(8)


@pytest.mark.parametrize("stop_at", [3, 9])
def test_grouped_evaluation_is_the_one_at_a_time_run(stop_at):
    """The same Langevin run evaluated in groups and one at a time: the hooks see the same
    evaluations (the same weights, bit for bit; errors equal to rounding) and a stop inside a
    group (evaluation 3 of the group 0..4; 9 is a group of one) ends the run at that
    evaluation: the same weights and noise-generator state as the one-at-a-time run."""
    from rfscaling.run import eval_groups

    task, data, dyn, info = _setup(T=0.02, n_steps=400, n_evals=15)
    val = sample_eigen_validation(task, data, 50, make_generator(9))
    assert [(g.first, g.size) for g in eval_groups(info.eval_steps, 7)][:2] == [(0, 5), (5, 2)]
    out = {}
    for size in (8, 1):
        rec, es = Recorder(stop_at=stop_at), EarlyStoppingHook(val)
        state = dyn.init(make_generator(1, "dyn"))
        res = simulate(dyn, state, info, [es, rec], target_weights=data.target_weights,
                       eigenvalues=data.eigenvalues, progress=False, chunk=7, group_size=size)
        state, summary = res.state, res.summary
        out[size] = rec, es, state, summary
    (rec8, es8, st8, su8), (rec1, es1, st1, su1) = out[8], out[1]
    assert [s.index for s in rec8.snaps] == [s.index for s in rec1.snaps] == list(range(stop_at + 1))
    for a, b in zip(rec8.snaps, rec1.snaps):
        assert torch.equal(a.weights, b.weights) and torch.equal(a.rng_state, b.rng_state)
        torch.testing.assert_close(a.train_error, b.train_error, rtol=1e-12, atol=0)
        assert a.metrics.generalization_error == pytest.approx(b.metrics.generalization_error, rel=1e-12)
    for a, b in zip(es8.history, es1.history):
        assert a["validation_error"] == pytest.approx(b["validation_error"], rel=1e-12)
    assert st8.step == st1.step == info.eval_steps[stop_at] and su8.final.step == st8.step
    assert torch.equal(st8.weights, st1.weights)
    assert torch.equal(st8.generator.get_state(), st1.generator.get_state())
    assert su8.stop_reason == su1.stop_reason == "recorder says stop" and su8.compute_macs == su1.compute_macs


@pytest.mark.parametrize("stop_at", [2, 4, 5])
def test_a_halted_run_rebuilt_from_its_finished_checkpoint_reports_the_same_final(tmp_path, stop_at):
    """A run halted inside a group (2), at a group's end (4) or at the start of the next (5),
    then rebuilt from its finished checkpoint (``start_index`` past the end, as the app does
    after a kill between the checkpoint and summary.json): the final snapshot is the stop
    evaluation, measured in its own group and slot, with its own theory point."""
    _, data, dyn, info = _setup(T=0.02, n_steps=400, n_evals=15)
    ck = CheckpointHook(tmp_path, every=100, identity="x")
    _, first = _run(dyn, data, info, [Recorder(stop_at=stop_at), ck])
    ckpt = load_checkpoint(tmp_path, "x")
    assert ckpt["finished"] and ckpt["index"] == stop_at
    gen = make_generator(5)
    gen.set_state(ckpt["rng_state"])
    state = State(ckpt["weights"], ckpt["step"], ckpt["time"], gen)
    _, again = _run(EulerDynamics(data, dyn.params), data, dataclasses.replace(info, start_index=len(info.eval_steps)),
                    [], state=state)
    a, b = first.final, again.final
    assert b.index == a.index == stop_at and b.step == a.step
    assert torch.equal(a.weights, b.weights) and torch.equal(a.train_error, b.train_error)
    assert _eq_metrics(a.metrics, b.metrics)
    assert b.theory.generalization_error == info.theory.generalization_error[stop_at]


def test_wall_clock_budget_stops_where_evaluating_one_at_a_time_would(monkeypatch):
    """The budget compares the clock when the run reached an evaluation, not when its group was
    handed over: with 20 ms per step and 50 ms of budget, evaluation 3 (step 4, 80 ms) is the
    first past the deadline, grouped or not (the earlier ones are at 0-40 ms). The clock is a
    fake that only the steps advance, so a loaded machine cannot move the deadline."""
    import time

    _, data, dyn0, info = _setup(T=0.02, n_steps=400, n_evals=15)
    clock = [1000.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    class Slow(EulerDynamics):
        def advance(self, state, n):
            clock[0] += 0.02 * n
            return super().advance(state, n)

    ends = {}
    for size in (8, 1):
        dyn = Slow(data, dyn0.params)
        res = simulate(dyn, dyn.init(make_generator(1, "dyn")), info, [BudgetHook(max_wall_s=0.05)],
                       target_weights=data.target_weights, eigenvalues=data.eigenvalues, progress=False,
                       chunk=7, group_size=size)
        state, summary = res.state, res.summary
        ends[size] = summary.final.index, state.step, summary.stop_reason
    assert ends[8] == ends[1] == (3, 4, "budget: 0.05 s of wall time")


def test_simulate_returns_the_curves_the_hooks_saw_with_status_and_message():
    """Like solve_ivp's result: completed -> status 0, a hook's stop -> 1 with its reason,
    non-finite weights -> -1; the curves are the totals of the snapshots the hooks were shown."""
    _, data, dyn, info = _setup()

    def run(hooks, d=dyn):
        return simulate(d, d.init(make_generator(1, "dyn")), info, hooks, target_weights=data.target_weights,
                        eigenvalues=data.eigenvalues, progress=False, chunk=7)

    rec = Recorder()
    done = run([rec])
    assert done.status == 0 and done.success and done.message == "completed"
    assert done.times.tolist() == [s.time for s in rec.snaps] and done.steps.tolist() == list(info.eval_steps)
    assert done.generalization_error.tolist() == [s.metrics.generalization_error for s in rec.snaps]
    assert done.train_error.tolist() == [s.metrics.train_error for s in rec.snaps]
    np.testing.assert_allclose(done.bias + done.variance, done.generalization_error, rtol=1e-12)
    stopped = run([Recorder(stop_at=4)])
    assert (stopped.status, stopped.success, stopped.message) == (1, False, "recorder says stop")
    assert stopped.times.size == 5 and stopped.state.step == info.eval_steps[4]

    class Blowup(EulerDynamics):
        def advance(self, state, n):
            state = super().advance(state, n)
            return State(state.weights * (math.inf if state.step >= info.eval_steps[6] else 1.0), state.step,
                         state.time, state.generator)

    diverged = run([Recorder()], Blowup(data, dyn.params))
    assert diverged.status == -1 and not diverged.success and diverged.message.startswith("training diverged")
    assert diverged.times.size == 6  # the finite evaluations only
