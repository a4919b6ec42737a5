"""Float64 NumPy references for the measures of nc_jax/metrics/_more_api.py and the conventions of
nc_jax/metrics/_conventions.py, written from the papers' formulas (explicit loops over classes and
pairs, d x d covariances, differences of vectors instead of Gram matrices); they share no code
with the package. Also used by test_metrics.ref_report for the extra report keys."""

import numpy as np


def f64(x):
    return np.asarray(x, np.float64)


def means(h, y, C):
    h = f64(h)
    return np.stack([h[y == c].mean(axis=0) for c in range(C)])


def global_mean(h, y, C, kind="class"):
    return means(h, y, C).mean(axis=0) if kind == "class" else f64(h).mean(axis=0)


def centred(h, y, C, kind="class"):
    return means(h, y, C) - global_mean(h, y, C, kind)


def etf(C):
    return (np.eye(C) - np.ones((C, C)) / C) / np.sqrt(C - 1)


def etf_dist(G):
    """||G/||G||_F - (I - 11^T/C)/sqrt(C-1)||_F (Zhu et al. 2021)."""
    return np.linalg.norm(G / np.linalg.norm(G) - etf(G.shape[0]))


def nc1_quotient(h, y, C, kind="class"):
    h, mu = f64(h), means(h, y, C)
    tr_w = np.mean([np.sum((h[i] - mu[y[i]]) ** 2) for i in range(len(y))])
    tr_b = np.mean([np.sum(m ** 2) for m in centred(h, y, C, kind)])
    return tr_w / tr_b


def etf_error(h, y, C, kind="class"):
    M = centred(h, y, C, kind)
    return etf_dist(M @ M.T)


def etf_error_weights(W):
    W = f64(W)
    return etf_dist(W @ W.T)


def self_duality_error(h, y, C, W, kind="class"):
    return etf_dist(f64(W) @ centred(h, y, C, kind).T)


def nc3_dot_var(h, y, C, W, center=True, normalized=True, ddof=1, kind="class"):
    W = f64(W)
    V = centred(h, y, C, kind) if center else means(h, y, C)
    p = np.array([W[c] @ V[c] for c in range(C)])
    if normalized:
        p = C * p / (np.linalg.norm(W) * np.linalg.norm(V))
    return np.var(p, ddof=ddof)


def bias_collapse(h, y, C, W, b, kind="class"):
    return np.linalg.norm(f64(W) @ global_mean(h, y, C, kind) + f64(b))


def class_distances(h, y, C, kind="class"):
    return np.array([np.linalg.norm(m) for m in centred(h, y, C, kind)])


def uniformity(h, y, C, kernel="log", s=None, kind="class"):
    """Liu et al. 2023 energies over unordered pairs of the normalised centred means; var ddof=0."""
    M = centred(h, y, C, kind)
    U = M / np.linalg.norm(M, axis=1, keepdims=True)
    s = h.shape[1] - 2 if s is None else s
    vals = []
    for a in range(C):
        for b in range(a + 1, C):
            r = np.linalg.norm(U[a] - U[b])
            vals.append({"distance": r, "log": np.log(1.0 / r), "riesz": np.sign(s) * r ** (-s)}[kernel])
    return {"mean": np.mean(vals), "var": np.var(vals)}


def ncc_pred(h, y, C):
    h, mu = f64(h), means(h, y, C)
    return np.array([np.argmin([np.linalg.norm(hi - m) for m in mu]) for hi in h])


def class_average(x, y, C):
    return np.mean([np.mean(x[y == c]) for c in range(C)])


def ncc_agreement(h, y, C, W, b=None, average="sample"):
    logits = f64(h) @ f64(W).T + (0.0 if b is None else f64(b))
    agree = (np.argmax(logits, axis=1) == ncc_pred(h, y, C)).astype(float)
    return agree.mean() if average == "sample" else class_average(agree, y, C)


def nc4(h, y, C, logits, average="sample"):
    miss = (np.argmax(f64(logits), axis=1) != ncc_pred(h, y, C)).astype(float)
    return miss.mean() if average == "sample" else class_average(miss, y, C)


def cdnv(h, y, C, power=2.0):
    """Galanti et al. 2022 with ||mu_c - mu_c'||^power, mean over ordered pairs c != c'."""
    h, mu = f64(h), means(h, y, C)
    var = [np.mean(np.sum((h[y == c] - mu[c]) ** 2, axis=1)) for c in range(C)]
    return np.mean([(var[a] + var[b]) / (2 * np.linalg.norm(mu[a] - mu[b]) ** power)
                    for a in range(C) for b in range(C) if a != b])


def cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def nc5(h, y, C, h_ood, per_sample=False):
    """Ammar et al. 2024: mean_c |cos(mu_c, mu_OOD)|, or mean over OOD rows and classes."""
    mu, h_ood = means(h, y, C), f64(h_ood)
    if per_sample:
        return np.mean([abs(cos(x, m)) for x in h_ood for m in mu])
    g = h_ood.mean(axis=0)
    return np.mean([abs(cos(m, g)) for m in mu])


def sigma_w(h, y, C):
    h, mu = f64(h), means(h, y, C)
    R = h - mu[y]
    return sum(np.outer(r, r) for r in R) / len(y)


def sigma_b(h, y, C, kind="class"):
    return sum(np.outer(m, m) for m in centred(h, y, C, kind)) / C


def pinv_top(S, k):
    """Pseudo-inverse of the symmetric S on its top-k eigen-directions."""
    w, V = np.linalg.eigh(S)
    idx = np.argsort(w)[::-1][:k]
    return V[:, idx] @ np.diag(1.0 / w[idx]) @ V[:, idx].T


def nc1(h, y, C, kind="class", per_class=True):
    d = f64(h).shape[1]
    t = np.trace(sigma_w(h, y, C) @ pinv_top(sigma_b(h, y, C, kind), min(C - 1, d)))
    return t / C if per_class else t


def std(x, ddof):
    return np.std(x, ddof=ddof) if len(x) > ddof else 0.0


def nc2(h, y, C, W=None, ddof=1, kind="class"):
    def rows(V):
        n = np.linalg.norm(V, axis=1)
        pairs = [cos(V[a], V[b]) for a in range(C) for b in range(a + 1, C)]
        maxangle = np.mean([abs(cos(V[a], V[b]) + 1 / (C - 1)) for a in range(C) for b in range(C) if a != b])
        return {"equinorm": std(n, ddof) / n.mean(), "equiangular": std(pairs, ddof), "maxangle": maxangle}

    out = rows(centred(h, y, C, kind))
    if W is not None:
        out.update({f"{k}_weights": v for k, v in rows(f64(W)).items()})
    return out


def nc3(h, y, C, W, center_cos=False, kind="class"):
    W, M = f64(W), centred(h, y, C, kind)
    papyan = np.sum((W / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2)
    V = M if center_cos else means(h, y, C)
    c = np.array([cos(W[k], V[k]) for k in range(C)])
    return {"nc3": papyan, "cos": c, "min_cos": c.min(), "mean_cos": c.mean()}


def report_extra(h, y, C, W=None):
    """The extra keys of collapse_report (REPORT_EXTRA, WEIGHT_EXTRA)."""
    log = uniformity(h, y, C, "log")
    out = {"nc1_quotient": nc1_quotient(h, y, C), "etf_error": etf_error(h, y, C),
           "uniformity_log_mean": log["mean"], "uniformity_log_var": log["var"]}
    if W is not None:
        out.update(etf_error_weights=etf_error_weights(W), self_duality_error=self_duality_error(h, y, C, W),
                   nc3_dot_var=nc3_dot_var(h, y, C, W))
    return out
