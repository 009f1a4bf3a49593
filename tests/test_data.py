"""Data: power-law eigen task, ensemble sampling, validation sets, seeding."""

import math

import numpy as np
import pytest
import torch

from rfscaling.data import (
    EigenTask,
    EnsembleData,
    make_generator,
    power_law_eigen_task,
    resolve_device,
    resolve_dtype,
    sample_eigen_ensemble,
    sample_eigen_validation,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_power_law_task_formulas():
    task = power_law_eigen_task(50, alpha=0.5, beta=1.5, label_noise=0.2, lam_1=2.0, c=3.0)
    k = np.arange(1, 51)
    np.testing.assert_allclose(task.eigenvalues, 2.0 * k ** -1.5, rtol=1e-14)
    np.testing.assert_allclose(task.eigenvalues * task.target_second_moment, 3.0 * k ** -2.5, rtol=1e-14)
    assert task.label_noise == 0.2 and task.teacher == "random"


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="teacher"):
        power_law_eigen_task(10, 1.0, 1.0, teacher="nope")
    with pytest.raises(ValueError, match="label_noise"):
        EigenTask(np.ones(3), np.ones(3), label_noise=-1.0)
    with pytest.raises(ValueError, match="eigenvalues"):
        EigenTask(np.array([1.0, 0.0]), np.ones(2))
    task = power_law_eigen_task(10, 1.0, 1.0)
    with pytest.raises(ValueError, match="n_samples"):
        sample_eigen_ensemble(task, 0, 1, 1, make_generator(0))
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("float16")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


def test_ensemble_statistics_match_the_task():
    """Feature covariance = diag(lam), label residual variance = label_noise, random-teacher
    second moment = E[wstar^2]; all within 5 standard errors of the sample estimates."""
    N, P, D, R = 6, 4000, 4, 3
    task = power_law_eigen_task(N, alpha=1.0, beta=0.5, label_noise=0.3, teacher="random")
    data = sample_eigen_ensemble(task, P, D, R, make_generator(1, "data"), dtype=torch.float64)
    assert data.features.shape == (D, P, N) and data.labels.shape == (D, R, P)
    assert data.target_weights.shape == (D, N)
    X = data.features.numpy().reshape(-1, N)
    z2 = X**2 / task.eigenvalues  # E = 1, Var = 2
    np.testing.assert_allclose(z2.mean(0), 1.0, atol=5 * math.sqrt(2.0 / len(X)))
    cov = (X.T @ X) / len(X) / np.sqrt(np.outer(task.eigenvalues, task.eigenvalues))
    off = cov[~np.eye(N, dtype=bool)]
    assert np.abs(off).max() < 5 / math.sqrt(len(X))
    clean = np.einsum("dpn,dn->dp", data.features.numpy(), data.target_weights.numpy())
    eps = data.labels.numpy() - clean[:, None, :]
    n = eps.size
    assert abs(eps.var() - 0.3) < 5 * 0.3 * math.sqrt(2.0 / n)
    # replicas differ only in the label noise: their noise draws are independent
    assert abs(np.corrcoef(eps[:, 0].ravel(), eps[:, 1].ravel())[0, 1]) < 5 / math.sqrt(D * P)
    # random teacher: wstar_k / sqrt(E wstar_k^2) is standard normal, redrawn per dataset
    big = sample_eigen_ensemble(task, 1, 4000, 1, make_generator(2), dtype=torch.float64)
    g2 = (big.target_weights.numpy() ** 2 / task.target_second_moment)
    np.testing.assert_allclose(g2.mean(0), 1.0, atol=5 * math.sqrt(2.0 / 4000))


def test_fixed_teacher_is_shared_and_exact():
    task = power_law_eigen_task(8, 1.0, 1.0, teacher="fixed")
    data = sample_eigen_ensemble(task, 5, 3, 2, make_generator(0), dtype=torch.float64)
    expected = np.sqrt(task.target_second_moment)
    for d in range(3):
        np.testing.assert_array_equal(data.target_weights[d].numpy(), expected)
    # no label noise: every replica has the clean labels
    torch.testing.assert_close(data.labels[:, 0], data.labels[:, 1], rtol=0, atol=0)


def test_seeding_is_reproducible_and_streams_independent():
    task = power_law_eigen_task(8, 1.0, 1.0, label_noise=0.1)
    a = sample_eigen_ensemble(task, 5, 2, 2, make_generator(7, "data"))
    b = sample_eigen_ensemble(task, 5, 2, 2, make_generator(7, "data"))
    c = sample_eigen_ensemble(task, 5, 2, 2, make_generator(7, "other"))
    assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.features, c.features)
    assert a.features.dtype == torch.float32


def test_validation_set_errors():
    task = power_law_eigen_task(10, 1.0, 1.0, label_noise=0.25, teacher="random")
    data = sample_eigen_ensemble(task, 20, 3, 2, make_generator(0), dtype=torch.float64)
    val = sample_eigen_validation(task, data, 20000, make_generator(1))
    assert val.features.shape == (3, 20000, 10) and val.labels.shape == (3, 20000)
    # the teacher itself has validation error = label noise; zero weights have E_g + noise
    w = data.target_weights[:, None, :].expand(3, 2, 10)
    err = val.errors(w)
    assert err.shape == (3, 2)
    assert torch.allclose(err, torch.full_like(err, 0.25), atol=5 * 0.25 * math.sqrt(2 / 20000))
    zero = val.errors(torch.zeros(3, 1, 10, dtype=torch.float64))[:, 0]
    eg0 = (data.eigenvalues * data.target_weights**2).sum(-1) + 0.25
    assert torch.allclose(zero, eg0, rtol=0.05)


def test_ensemble_data_checks_shapes():
    X = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="labels"):
        EnsembleData(X, torch.zeros(2, 1, 5), torch.zeros(2, 4), torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="target_weights"):
        EnsembleData(X, torch.zeros(2, 1, 3), torch.zeros(4), torch.ones(4), torch.ones(4))
