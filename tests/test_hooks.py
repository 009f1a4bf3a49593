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


# -- TensorBoard ------------------------------------------------------------------------------------
def _tb_events(log_dir, run="experiment"):
    """EventAccumulator of one run of a TensorBoardHook log dir (all scalars and images kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir if not run else log_dir / run), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _tb_snapshots(n_evals=12, **kw):
    """Snapshots of a real run (metrics computed, as simulate's hooks share them) and its info."""
    _, data, dyn, info = _setup(n_evals=n_evals, **kw)
    rec = Recorder()
    _run(dyn, data, info, [rec])
    for s in rec.snaps:
        s.metrics  # noqa: B018  computed once per evaluation, shared by all hooks
    return info, rec.snaps


def _summary_of(snap):
    return RunSummary(final=snap, stop_reason="completed", wall_time_s=0.0, compute_macs=0, completed=True)


def _no_writer(tb, proc=None):
    """The hook holds no writer process and ``proc`` (the one it had) has exited."""
    return tb._proc is None and (proc is None or not proc.is_alive())


def test_time_steps_are_one_function_of_time():
    from rfscaling.hooks.tensorboard import INF_STEP, step_time, time_step, time_steps

    assert time_step(0.0) == 0 and time_step(math.inf) == INF_STEP
    assert time_step(1.0) == 300 and time_step(1000.0) == 600 and time_step(0.01) == 100
    assert time_step(2.0) == round(100 * math.log10(2.0 / 1e-3)) == 330
    assert time_step(1e-3) == 1 and time_step(1e-7) == 1  # at least 1 for t > 0
    for t in (0.0035, 0.7, 42.0, 1e6):
        assert abs(math.log10(step_time(time_step(t)) / t)) <= 0.005 + 1e-12  # read back to 1.2 %
    with pytest.raises(ValueError):
        time_step(-1.0)
    # a run's steps: strictly increasing; clashing times move up by one
    times = np.array([0.0, 1e-4, 2e-4, 0.5, 0.501, 0.502, 10.0])
    assert time_steps(times).tolist() == [0, 1, 2, 270, 271, 272, 400]


def test_image_indices_are_log_even_and_at_most_ten():
    from rfscaling.hooks.tensorboard import image_indices

    times = log_spaced_steps(10_000, 40) * 0.01
    idx = image_indices(times)
    assert len(idx) == 10 and idx[0] == 0 and idx[-1] == len(times) - 1 and idx == sorted(set(idx))
    logt = np.log10(times[idx[1:]])
    gaps = np.diff(logt)
    assert gaps.max() < 2.5 * (logt[-1] - logt[0]) / 8  # spread over the decades, not bunched
    assert image_indices(times[:7]) == list(range(7))
    assert image_indices(times[:7], every=2) == [0, 2, 4, 6]
    assert len(image_indices(times, max_images=3)) == 3 and image_indices(times, max_images=0) == []


def test_tensorboard_hook_writes_experiment_and_dmft_runs(tmp_path):
    """Through simulate: the experiment and the DMFT as two runs with the same scalar tags at
    the steps of time_steps, the DMFT values those of the theory, one image per evaluation
    (fewer than 10), and the hparams session with its metrics."""
    from rfscaling.hooks.tensorboard import time_steps

    _, data, dyn, info = _setup(n_evals=6)
    tb = TensorBoardHook(tmp_path / "tb", hparams={"data.P": 20, "dynamics.name": "gradient_flow"})
    _run(dyn, data, info, [tb])
    exp, dmft = _tb_events(tmp_path / "tb", "experiment"), _tb_events(tmp_path / "tb", "dmft")
    tags = {"curves/E_g", "curves/bias", "curves/variance", "curves/train_error", "time"}
    assert set(exp.Tags()["scalars"]) == set(dmft.Tags()["scalars"]) == tags
    steps = time_steps(info.eval_times).tolist()
    for q in tags:
        assert [e.step for e in exp.Scalars(q)] == [e.step for e in dmft.Scalars(q)] == steps, q
    np.testing.assert_allclose([e.value for e in dmft.Scalars("curves/E_g")], info.theory.generalization_error,
                               rtol=1e-6)
    np.testing.assert_allclose([e.value for e in exp.Scalars("time")], info.eval_times, rtol=1e-6)
    assert [e.step for e in exp.Images("error_per_mode")] == steps and not dmft.Tags()["images"]
    img = exp.Images("error_per_mode")[0]
    assert img.width > 100 and img.height > 100
    session = _tb_events(tmp_path / "tb", "")
    assert set(session.PluginTagToContent("hparams")) == {
        "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    assert set(session.Tags()["scalars"]) == {"hparam/E_g_optimum_dmft", "hparam/t_optimum_dmft"}


def test_tensorboard_in_the_app_reads_back_as_documented(tmp_path):
    """The app's TensorBoard output read back with EventAccumulator: steps follow the formula,
    the dmft run has the experiment's tags, at most 10 images (log-evenly chosen, t = 0 and the
    last one included), the hparams session with the named metrics (early-stopped E_g next to the
    DMFT optimum), the shown-by-default hyperparameters, and no hparams metric among the
    experiment's or the DMFT's scalars."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    from rfscaling.hooks.tensorboard import SHOWN_HPARAMS, image_indices, time_steps
    from rfscaling.train import train
    from specs import config

    spec = config(P=24, N=48, datasets=2, replicas=2, label_noise=0.1, dtype=F64, t_max=20.0, n_evals=24,
                  threads=1, tensorboard=True, progress=False)
    s = train(spec, tmp_path)
    tb = tmp_path / "tensorboard"
    assert sorted(p.name for p in tb.iterdir() if p.is_dir()) == ["dmft", "experiment"]
    exp, dmft, session = (_tb_events(tb, r) for r in ("experiment", "dmft", ""))
    hp = session
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    times = np.array([float(r["time"]) for r in rows])
    steps = time_steps(times).tolist()
    assert [e.step for e in exp.Scalars("curves/E_g")] == steps
    assert [e.step for e in exp.Scalars("time")] == steps
    positive = [st for st, t in zip(steps, times) if t > 0]
    assert positive == [round(100 * math.log10(t / 1e-3)) for t in times if t > 0]  # no clash here
    np.testing.assert_allclose([e.value for e in exp.Scalars("curves/E_g")], [float(r["E_g"]) for r in rows],
                               rtol=1e-5)
    np.testing.assert_allclose([e.value for e in dmft.Scalars("curves/E_g")], [float(r["E_g_theory"]) for r in rows],
                               rtol=1e-5)
    assert set(dmft.Tags()["scalars"]) == set(exp.Tags()["scalars"]) == {
        "curves/E_g", "curves/bias", "curves/variance", "curves/train_error", "time"}
    images = [e.step for e in exp.Images("error_per_mode")]
    assert len(times) > 10 and len(images) == 10 and images[0] == 0 and images[-1] == steps[-1]
    assert images == [steps[i] for i in image_indices(times)]
    for acc in (exp, dmft):
        assert not [t for t in acc.Tags()["scalars"] if t.startswith("hparam")]
    content = session.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.EXPERIMENT_TAG]).experiment
    metrics = [(m.name.group, m.name.tag) for m in experiment.metric_infos]
    assert metrics == [("experiment", "curves/E_g"), ("dmft", "curves/E_g"), ("", "hparam/E_g_early_stopped"),
                       ("", "hparam/E_g_optimum_dmft"), ("", "hparam/t_early_stopped"), ("", "hparam/t_optimum_dmft"),
                       ("experiment", "curves/train_error"), ("dmft", "curves/train_error")]
    shown = [h.name for h in experiment.hparam_infos if h.differs]
    assert set(shown) == set(SHOWN_HPARAMS) and len(shown) == 5  # the dashboard's first five
    start = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG])
    assert start.session_start_info.hparams["dynamics.name"].string_value == "gradient_flow"
    assert start.session_start_info.hparams["data.P"].number_value == 24
    es = s["early_stopping"]
    got = {t: acc_v[0].value for t in hp.Tags()["scalars"] for acc_v in [hp.Scalars(t)]}
    assert got == pytest.approx({"hparam/E_g_early_stopped": es["E_g"], "hparam/t_early_stopped": es["stopping_time"],
                                 "hparam/E_g_optimum_dmft": es["theory_optimum_E_g"],
                                 "hparam/t_optimum_dmft": es["theory_optimum_time"]}, rel=1e-6)
    assert {e.step for t in hp.Tags()["scalars"] for e in hp.Scalars(t)} == {steps[-1]}
    # the final-E_g columns are the last points of the runs' own E_g
    assert exp.Scalars("curves/E_g")[-1].value == pytest.approx(s["final"]["E_g"], rel=1e-6)
    assert dmft.Scalars("curves/E_g")[-1].value == pytest.approx(s["final"]["E_g_theory"], rel=1e-6)


def test_tensorboard_close_writes_every_evaluation_sent_while_the_writer_starts(tmp_path):
    """Evaluations sent right after on_start (the writer process is still importing) are all on
    disk once close() returns: the scalars, and images pixel-equal to in-process renders."""
    import io

    from PIL import Image

    from rfscaling.hooks.tensorboard import image_indices, time_steps

    info, snaps = _tb_snapshots(n_evals=14)
    tb = TensorBoardHook(tmp_path / "tb", image_every=1)
    tb.on_start(info)
    proc = tb._proc
    for s in snaps:
        assert tb.on_eval(s) is None
    assert proc.is_alive()
    tb.close()
    assert proc.exitcode == 0
    steps = time_steps(info.eval_times).tolist()
    chosen = image_indices(info.eval_times)
    assert len(snaps) > 10 and len(chosen) == 10
    # the same snapshots rendered in-process by a hook that saw the same on_start info
    expected_images = [tb.mode_image(snaps[i]) for i in chosen]
    exp, dmft = _tb_events(tmp_path / "tb", "experiment"), _tb_events(tmp_path / "tb", "dmft")
    for acc, tag, get in [(exp, "curves/E_g", lambda s: s.metrics.generalization_error),
                          (exp, "curves/bias", lambda s: s.metrics.bias),
                          (exp, "curves/variance", lambda s: s.metrics.variance),
                          (exp, "curves/train_error", lambda s: s.metrics.train_error),
                          (exp, "time", lambda s: s.time),
                          (dmft, "curves/E_g", lambda s: s.theory.generalization_error),
                          (dmft, "curves/bias", lambda s: s.theory.bias),
                          (dmft, "curves/variance", lambda s: s.theory.variance),
                          (dmft, "curves/train_error", lambda s: s.theory.train_error),
                          (dmft, "time", lambda s: s.time)]:
        ev = acc.Scalars(tag)
        assert [e.step for e in ev] == steps, tag
        np.testing.assert_allclose([e.value for e in ev], [get(s) for s in snaps], rtol=1e-6, err_msg=tag)
    images = exp.Images("error_per_mode")
    assert [e.step for e in images] == [steps[i] for i in chosen]
    for e, want in zip(images, expected_images):
        got = np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))
        np.testing.assert_array_equal(got, want)


def test_tensorboard_image_every_and_max_images(tmp_path):
    """image_every thins the candidates, max_images caps them (log-evenly in time)."""
    from rfscaling.hooks.tensorboard import time_steps

    info, snaps = _tb_snapshots(n_evals=6)
    steps = time_steps(info.eval_times)
    for kw, want in (({"image_every": 2}, list(range(0, len(snaps), 2))), ({"max_images": 2}, [0, len(snaps) - 1])):
        tb = TensorBoardHook(tmp_path / str(kw), **kw)
        tb.on_start(info)
        for s in snaps:
            tb.on_eval(s)
        tb.close()
        assert [e.step for e in _tb_events(tmp_path / str(kw)).Images("error_per_mode")] == steps[want].tolist(), kw


def test_tensorboard_on_eval_is_cheap_while_the_writer_starts(tmp_path):
    """Functional check (not a benchmark): on_start does not wait for the writer process's
    start (its imports run in parallel), and on_eval only queues."""
    import time

    from rfscaling.hooks.tensorboard import image_indices

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
    assert len(_tb_events(tmp_path / "tb").Images("error_per_mode")) == len([i for i in image_indices(info.eval_times)
                                                                           if i < 12])


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
    assert procs[0].exitcode == 1 and _no_writer(tb, procs[0])


def test_tensorboard_on_eval_and_on_end_report_a_dead_writer(tmp_path):
    """A writer process that died (here: killed) is reported by the next on_eval, without
    waiting; close() then returns and does not repeat it, while on_end always raises (the
    hparams are lost)."""
    info, snaps = _tb_snapshots(n_evals=4)
    tb = TensorBoardHook(tmp_path / "tb")
    tb.on_start(info)
    proc = tb._proc
    tb.on_eval(snaps[0])
    proc.kill()
    proc.join()

    def scenario():
        with pytest.raises(RuntimeError, match="the writer process failed: killed by SIGKILL"):
            tb.on_eval(snaps[1])
        tb.close()
        return True

    out = _in_thread(scenario)
    assert out.get("value") is True, out.get("error")
    assert _no_writer(tb, proc)

    tb2 = TensorBoardHook(_unwritable_dir(tmp_path), hparams={"data.P": 20})
    tb2.on_start(info)
    for s in snaps:
        tb2.on_eval(s)
    out = _in_thread(lambda: tb2.on_end(_summary_of(snaps[-1])))
    _assert_writer_failure(out.get("error"))
    assert _no_writer(tb2)


def test_tensorboard_writer_failure_surfaces_through_simulate(tmp_path):
    """on_end (or an on_eval) raises the writer's failure, so the run does not end quietly."""
    _, data, dyn, info = _setup(n_evals=6)
    tb = TensorBoardHook(_unwritable_dir(tmp_path), hparams={"data.P": 20})
    out = _in_thread(lambda: _run(dyn, data, info, [tb]))
    _assert_writer_failure(out.get("error"))
    assert _no_writer(tb)


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
    assert proc.daemon, "the writer process must not keep the interpreter alive"
    for s in snaps:
        tb.on_eval(s)
    tb.on_end(_summary_of(snaps[-1]))
    assert proc.exitcode == 0, "no writer process remains after on_end"
    assert _no_writer(tb, proc)
    tb.close()
    tb.close()
    assert len(_tb_events(tmp_path / "tb").Scalars("curves/E_g")) == len(snaps)


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
    assert proc.exitcode == 0 and not (tmp_path / "unused").exists()

    tb = TensorBoardHook(tmp_path / "tb", hparams={"data.P": 20})
    tb.launch()
    proc = tb._proc
    tb.launch()  # idempotent
    tb.on_start(info)
    assert tb._proc is proc
    for s in snaps:
        tb.on_eval(s)
    tb.on_end(_summary_of(snaps[-1]))
    assert proc.exitcode == 0 and _no_writer(tb, proc)
    assert len(_tb_events(tmp_path / "tb").Scalars("curves/E_g")) == len(snaps)


def test_tensorboard_close_kills_a_writer_that_hangs(tmp_path, monkeypatch):
    """A writer process that never finishes (here: it never reads its queue, as on a hung
    filesystem) does not hang the end of the run: ``close`` kills it after ``close_timeout_s``
    and says so."""
    import time

    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(600)\n")
    monkeypatch.setattr(TensorBoardHook, "worker_file", str(hang))
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
    assert time.monotonic() - t0 < 10 and _no_writer(tb, proc)
    tb.close()  # idempotent afterwards

    # stuck during the run: once the queue is full, on_eval fails instead of waiting
    tb = TensorBoardHook(tmp_path / "tb2")
    tb.close_timeout_s, tb.queue_size = 1.0, 2
    tb.on_start(info)
    proc = tb._proc
    with pytest.raises(RuntimeError, match="took no message for 1 s"):
        for _ in range(100):
            tb.on_eval(snaps[0])
    tb.close()  # kills it (the failure was raised by on_eval already, as for a writer that died)
    assert _no_writer(tb, proc)


def test_mode_image_draws_points_and_line_where_matplotlib_puts_them():
    """The per-mode image: the empirical per-mode errors are C0 points and the DMFT a C3 line
    where the axes' data -> pixel transform puts them, and nothing is drawn a decade off."""
    from rfscaling.hooks.tb_writer import ModeImage

    n = 200
    k = np.arange(1, n + 1, dtype=np.float64)
    emp, th = 0.5 * k**-2.0, 0.3 * k**-1.2
    r = ModeImage(ylim=(1e-7, 1.0))
    img = r.render(1.5, emp, th).astype(np.int32)
    ax = r._ax
    H = img.shape[0]

    def near(kk, e, color, tol=60):
        x, y = ax.transData.transform((kk, e))
        row, col = int(round(H - y)), int(round(x))
        patch = img[row - 2:row + 3, col - 2:col + 3].reshape(-1, 3)
        return bool((np.abs(patch - np.array(color)).sum(1) < tol).any())

    C0, C3 = (31, 119, 180), (214, 39, 40)
    for kk in (1, 2, 5, 17, 60, 150):  # points apart from the line (different laws)
        assert near(kk, emp[kk - 1], C0), kk
        assert near(kk, th[kk - 1], C3), kk
        assert not near(kk, 10 * emp[kk - 1], C0) and not near(kk, 10 * th[kk - 1], C3), kk


def test_tensorboard_writer_ignores_sigint_and_flushes_when_the_parent_dies(tmp_path):
    """A SIGINT (Ctrl-C reaches the whole foreground process group) does not kill the writer;
    if the parent dies without close() (here: SIGKILL), the writer notices, writes what reached
    it and exits."""
    import signal
    import subprocess
    import sys
    import time

    from pathlib import Path

    script = tmp_path / "parent.py"
    script.write_text(f"""
import os, signal, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from test_hooks import _tb_snapshots
from rfscaling.hooks import TensorBoardHook
info, snaps = _tb_snapshots(n_evals=4)
tb = TensorBoardHook({str(tmp_path / "tb")!r})
tb.on_start(info)
for s in snaps:
    tb.on_eval(s)
time.sleep(1.0)  # the queue's feeder thread has written everything into the pipe
os.kill(tb._proc.pid, signal.SIGINT)
print(tb._proc.pid, len(snaps), flush=True)
time.sleep(0.5)
os.kill(os.getpid(), signal.SIGKILL)
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    pid, n = (int(x) for x in out.stdout.split())
    def running(pid):  # neither gone nor a zombie (its new parent may not reap it)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 60
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if running(pid):
        pytest.fail("the writer process did not exit after its parent died")
    assert len(_tb_events(tmp_path / "tb").Scalars("curves/E_g")) == n


def test_tensorboard_resume_purges_from_the_restart_index(tmp_path):
    """purge_step is applied (in the writer process): a run resumed at index k replaces the
    evaluations >= k of the first one instead of duplicating them, in both runs."""
    import time

    from rfscaling.hooks.tensorboard import time_steps

    info, snaps = _tb_snapshots(n_evals=8)
    k = 3
    tb = TensorBoardHook(tmp_path / "tb", hparams={"data.P": 20})
    tb.on_start(info)
    for s in snaps:
        tb.on_eval(s)
    tb.on_end(_summary_of(snaps[-1]))
    # event files are read in name order (whole seconds in the name), so the resumed run's file
    # must start in a later second
    time.sleep(1.02 - time.time() % 1.0)
    tb2 = TensorBoardHook(tmp_path / "tb", hparams={"data.P": 20})
    tb2.on_start(dataclasses.replace(info, start_index=k))
    for s in snaps[k:]:
        tb2.on_eval(s)
    tb2.on_end(_summary_of(snaps[-1]))
    steps = time_steps(info.eval_times).tolist()
    for run in ("experiment", "dmft"):
        assert [e.step for e in _tb_events(tmp_path / "tb", run).Scalars("curves/E_g")] == steps, run
    assert len(_tb_events(tmp_path / "tb", "").Scalars("hparam/E_g_optimum_dmft")) == 1
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2


def test_hparams_summaries_use_tensorboards_plugin_constants():
    """The writer builds the hparams summaries without importing tensorboard's plugin metadata
    module (it pulls in a TensorFlow stub); its constants are the plugin's."""
    from tensorboard.plugins.hparams import metadata

    from rfscaling.hooks import tb_writer

    assert tb_writer._HP_PLUGIN == metadata.PLUGIN_NAME
    assert tb_writer._HP_VERSION == metadata.PLUGIN_DATA_VERSION
    assert (tb_writer._HP_EXPERIMENT, tb_writer._HP_SESSION_START, tb_writer._HP_SESSION_END) == (
        metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG)


def test_tensorboard_writer_process_imports_neither_torch_nor_rfscaling(tmp_path, monkeypatch):
    """The writer process runs tb_writer.py by path: it writes a whole run (start, evaluations
    with images, hparams, stop) without importing torch or the rfscaling package (whose
    __init__s import torch). A wrapper around the real worker file reports its modules."""
    import json

    from rfscaling.hooks import tb_writer

    report = tmp_path / "modules.json"
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(f"""
import json, runpy, sys
try:
    runpy.run_path({tb_writer.__file__!r}, init_globals={{"MESSAGES": MESSAGES, "STATUS": STATUS}},
                   run_name=__name__)
finally:
    mods = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("torch", "rfscaling"))
    open({str(report)!r}, "w").write(json.dumps(mods))
""")
    monkeypatch.setattr(TensorBoardHook, "worker_file", str(wrapper))
    info, snaps = _tb_snapshots(n_evals=3)
    tb = TensorBoardHook(tmp_path / "tb", hparams={"data.P": 20})
    tb.on_start(info)
    for s in snaps:
        tb.on_eval(s)
    tb.on_end(_summary_of(snaps[-1]))
    assert json.loads(report.read_text()) == []
    acc = _tb_events(tmp_path / "tb")
    assert len(acc.Scalars("curves/E_g")) == len(snaps) and len(acc.Images("error_per_mode")) == len(snaps)


def test_tensorboard_writer_does_not_import_the_apps_main_module(tmp_path):
    """A spawn child re-imports the parent's __main__ module; the hook starts its writer without
    it (for python -m rfscaling.train that would be the whole app, ~1.7 s): a main script that
    records each import of itself is imported once, as __main__, not again as __mp_main__."""
    import subprocess
    import sys
    from pathlib import Path

    marker = tmp_path / "imports.txt"
    script = tmp_path / "main_script.py"
    script.write_text(f"""
import sys
open({str(marker)!r}, "a").write(__name__ + "\\n")
if __name__ == "__main__":
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from test_hooks import _tb_snapshots
    from rfscaling.hooks import TensorBoardHook
    info, snaps = _tb_snapshots(n_evals=3)
    tb = TensorBoardHook({str(tmp_path / "tb")!r})
    tb.on_start(info)
    for s in snaps:
        tb.on_eval(s)
    tb.close()
    assert sys.modules["__main__"].__file__ == {str(script)!r}
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert marker.read_text().split() == ["__main__"]
    assert len(_tb_events(tmp_path / "tb").Scalars("curves/E_g")) == len(log_spaced_steps(300, 3))


def test_tensorboard_writer_starts_from_a_joblib_worker(tmp_path):
    """Hydra's joblib launcher runs a sweep's jobs in loky workers, whose global start method
    ("loky") a fresh interpreter does not know: the hook's spawn child starts there all the same."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("joblib")
    script = tmp_path / "sweep.py"
    script.write_text(f"""
import sys
from joblib import Parallel, delayed

def job(i):
    import multiprocessing
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from test_hooks import _tb_snapshots
    from rfscaling.hooks import TensorBoardHook
    info, snaps = _tb_snapshots(n_evals=3)
    tb = TensorBoardHook({str(tmp_path)!r} + f"/tb{{i}}")
    tb.on_start(info)
    for s in snaps:
        tb.on_eval(s)
    tb.close()
    return multiprocessing.get_start_method(allow_none=True)

if __name__ == "__main__":
    print(Parallel(n_jobs=2, backend="loky")(delayed(job)(i) for i in range(2)))
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["['loky',", "'loky']"]  # the workers' method is left as it was
    for i in range(2):
        assert len(_tb_events(tmp_path / f"tb{i}").Scalars("curves/E_g")) == len(log_spaced_steps(300, 3))


@pytest.mark.parametrize("when", ["on_start", "on_end"])
def test_a_failing_hook_does_not_leave_the_tensorboard_writer_running(tmp_path, when):
    """When another hook raises in on_start or on_end, simulate still closes the TensorBoard hook:
    its writer process has exited and what was sent is on disk."""
    from rfscaling.hooks.tensorboard import time_steps
    from rfscaling.models import make_problem
    from rfscaling.run import RunInfo
    from specs import problem

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
    assert tb._proc is None or not tb._proc.is_alive()  # closed, not left running
    if when == "on_end":
        steps = time_steps(info.eval_times).tolist()
        assert [e.step for e in _tb_events(tmp_path / "tb").Scalars("curves/E_g")] == steps


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
    assert len(_tb_events(tmp_path / "tb").Scalars("curves/E_g")) == len(snaps)


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
