"""Every run's C x C class-mean cosine matrix (`cosine_matrix`, last layer and per layer) against
NumPy float64 from the model's own features."""
import numpy as np

import nc_jax
from tests.helpers import tiny_config, tiny_data


def _gram64(h, y, C):
    h = np.asarray(h, np.float64).reshape(len(h), -1)
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    U = np.stack([u[y == c].mean(0) for c in range(C)])
    return U @ U.T


def test_cosine_matrix_of_every_run_and_layer():
    cfg = tiny_config(weight_decays=(1e-3,), seeds=(0,))
    data = tiny_data(cfg)
    res = nc_jax.run_sweep(cfg, data, progress=False)
    run = nc_jax.analyse(res, data, layers=True)[0]
    st = res.state(0)
    _, feats = res.task.features(st.params, st.batch_stats, data.x)
    C = data.num_classes
    G = np.asarray(run["cosine_matrix"])
    assert G.shape == (C, C)
    np.testing.assert_allclose(G, _gram64(feats[-1], data.y, C), atol=2e-6)
    off = ~np.eye(C, dtype=bool)
    np.testing.assert_allclose(G.diagonal().min(), run["min_intra"], atol=1e-6)
    np.testing.assert_allclose(G[off].max(), run["max_inter"], atol=1e-6)
    for layer, f in zip(run["layers"], feats):
        np.testing.assert_allclose(np.asarray(layer["cosine_matrix"]), _gram64(f, data.y, C),
                                   atol=2e-6)
