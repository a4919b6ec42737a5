"""Per-run NC analysis of trained states, built from composable reporters.

A *reporter* is a function `reporter(view) -> {name: array}` of one run's `RunView` (the task,
the state, the whole training set, and the eval- / train-mode forward passes computed once and
shared). `run_report` merges the dicts of a list of reporters inside one jitted program; a new
metric is one new reporter. All functions take a single-run state (no run axis) and are vmapped
over runs by the callers, so the same code serves one run or a whole sweep.

Reporters (default order): `loss_accuracy`, `collapse`, `theory_quantities` and
`theorem_bounds` (cross-entropy only), `prop221` (models whose last feature is a BN output),
`per_layer` and `layer_spectrum` (with `layers=True`).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nc_jax import metrics

from nc_jax.analysis import _theory as theory
from nc_jax.metrics._measures import cos_summary
from nc_jax.losses import cross_entropy
from nc_jax._naming import callable_name
from nc_jax.training._step import TrainState, forward
from nc_jax.training._step import loss_accuracy as _loss_accuracy
from nc_jax.training._task import Task

Reporter = Callable[["RunView"], Dict[str, jax.Array]]


def _flat(h: jax.Array) -> jax.Array:
    """Features (N, ...) -> (N, d): conv feature maps are measured as vectors."""
    return h.reshape(h.shape[0], -1)


class RunView:
    """One run's state on the whole training set; forward passes are computed on first use and
    shared by every reporter (Python-level caching while tracing, so XLA sees each once)."""

    def __init__(self, task: Task, state: TrainState, x, y):
        self.task, self.state, self.x, self.y = task, state, x, y
        self.num_classes = task.num_classes

    @functools.cached_property
    def eval(self):
        """(logits (N, C), features tuple) with BN in eval mode (running statistics)."""
        return forward(self.state, self.x, self.task, train=False)

    @functools.cached_property
    def train_features(self):
        """Features with BN normalizing by the whole set's own statistics (train mode)."""
        return forward(self.state, self.x, self.task, train=True)[1]

    @property
    def logits(self):
        return self.eval[0]

    @property
    def h(self):
        """The penultimate feature h (N, d) the classifier reads."""
        return _flat(self.eval[1][-1])

    @functools.cached_property
    def classifier(self):
        return self.task.weights(self.state.params)


def loss_accuracy(v: RunView) -> Dict[str, jax.Array]:
    """train_loss (the task's loss) and train_accuracy on the whole set, BN in eval mode."""
    return {f"train_{k}": a for k, a in _loss_accuracy(v.task, v.logits, v.y).items()}


def collapse(v: RunView) -> Dict[str, jax.Array]:
    """`metrics.collapse_report` of the last-layer features h with the classifier W and logits."""
    W, _ = v.classifier
    return dict(metrics.collapse_report(v.h, v.y, v.num_classes, W=W, logits=v.logits))


def _theorem_inputs(v: RunView):
    """What Theorem 2.3.1 is a statement about, for a bias-free classifier: the features and
    weights (h, W), or ([h; 1], [W b]) when the head has a bias b (the thesis' remark: a
    constant 1 appended to every feature, b to every weight row), their alpha and beta, and
    m(alpha, beta), a true lower bound of the loss in both cases."""
    W, b = v.classifier
    h = v.h
    alpha, beta = theory.feature_rms(h), theory.weight_scale(W)
    if b is not None:
        h = jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], axis=1)
        W = jnp.concatenate([W, b[:, None]], axis=1)
        alpha, beta = jnp.sqrt(alpha ** 2 + 1.0), theory.weight_scale(W)
    return h, W, alpha, beta, theory.min_loss(alpha, beta, v.num_classes)


def theory_quantities(v: RunView, delta: float = 0.1) -> Dict[str, jax.Array]:
    """alpha = feature_rms(h), beta = weight_scale(W) for every loss; for cross-entropy also
    Theorem 2.3.1's quantities of the theorem's features (`_theorem_inputs`): alpha_aug =
    sqrt(alpha^2 + 1), beta_aug = ||[W b]||_F / sqrt(C) with a head bias b (without one they
    equal alpha and beta), min_loss = m(alpha_aug, beta_aug), loss_gap = epsilon = CE - m,
    rate = exp(C/(C-1) ab)/(ab) sqrt(eps/delta). The theorem is a cross-entropy statement:
    other losses get alpha and beta only."""
    W, _ = v.classifier
    out = {"alpha": theory.feature_rms(v.h), "beta": theory.weight_scale(W)}
    if v.task.loss_name != "ce":
        return out
    _, _, alpha_aug, beta_aug, m = _theorem_inputs(v)
    eps = cross_entropy(v.logits, v.y) - m
    out.update(alpha_aug=alpha_aug, beta_aug=beta_aug, min_loss=m, loss_gap=eps,
               rate=theory.rate_term(alpha_aug, beta_aug, v.num_classes, eps, delta))
    return out


def theorem_bounds(v: RunView, delta: float = 0.1) -> Dict[str, jax.Array]:
    """Theorem 2.3.1's bounds against the measured cosines of the features it is about (h, or
    [h; 1] with a head bias; `thm_augmented` says which), O-constants set to 1 (cross-entropy
    only):

    - `thm_bound_intra` = 1 - rate (`theory.rate_term`), `thm_frac_classes` = fraction of the
      classes c with intra_c >= thm_bound_intra (the theorem: >= 1 - delta);
    - `thm_bound_inter` = -1/(C-1) + `theory.inter_rate_term`, `thm_frac_pairs` = fraction of the
      C(C-1)/2 class pairs with inter_cc' <= thm_bound_inter (the theorem: >= 1 - delta);
    - `thm_min_intra`, `thm_max_inter`: the measured extremes on those features.
    A bound that cannot fail (1 - rate <= -1, or the inter bound >= 1) is vacuous and its
    fraction is 1 by construction; `thm_vacuous_intra` / `thm_vacuous_inter` flag it."""
    if v.task.loss_name != "ce":
        return {}
    C = v.num_classes
    h, W, alpha, beta, m = _theorem_inputs(v)
    eps = cross_entropy(v.logits, v.y) - m
    G = metrics.cosine_similarity_matrix(h, v.y, C)
    intra = jnp.diag(G)
    upper = jnp.triu(jnp.ones((C, C), bool), k=1)
    b_intra = 1.0 - theory.rate_term(alpha, beta, C, eps, delta)
    b_inter = -1.0 / (C - 1) + theory.inter_rate_term(alpha, beta, C, eps, delta)
    s = cos_summary(G, C)
    return {"thm_augmented": jnp.asarray(v.classifier[1] is not None),
            "thm_bound_intra": b_intra, "thm_bound_inter": b_inter,
            "thm_frac_classes": jnp.mean(intra >= b_intra),
            "thm_frac_pairs": jnp.sum(upper & (G <= b_inter)) / upper.sum(),
            "thm_vacuous_intra": b_intra <= -1.0, "thm_vacuous_inter": b_inter >= 1.0,
            "thm_min_intra": s["min_intra"], "thm_max_inter": s["max_inter"]}


def prop221(v: RunView) -> Dict[str, jax.Array]:
    """Proposition 2.2.1 for an MLP with BN (its last feature is the last BN's output), BN over
    the whole set (train mode): `rms_train` = RMS norm of that output next to ||gamma|| and
    ||beta||. The proposition (beta = 0, eps = 0) reads rms = ||gamma||; our BN keeps a shift
    (except the peeled MLP's) and has eps = 1e-5, so `prop221_rhs` = sqrt(||gamma||^2 +
    ||beta||^2) holds up to eps and `prop221_rhs_eps` = sqrt(sum_k gamma_k^2 var_k / (var_k +
    eps) + ||beta||^2), var_k the whole-set variance of BN input k, holds exactly.
    Models that do not provide `last_bn` (`nc_jax.training.Task.last_bn`), and MLPs without BN:
    no keys."""
    if not v.task.has_last_bn:
        return {}
    feats = v.train_features
    bn = v.task.last_bn(v.state.params, feats[-2] if len(feats) > 1 else _flat(v.x))
    if bn is None:
        return {}
    nan = jnp.float32(jnp.nan)
    scale, bias, pre = bn["scale"], bn["bias"], bn["input"]
    g = jnp.linalg.norm(scale) if scale is not None else nan
    bt = jnp.linalg.norm(bias) if bias is not None else (jnp.float32(0.0) if scale is not None
                                                         else nan)
    var = jnp.mean(jnp.square(pre - jnp.mean(pre, axis=0)), axis=0)
    gamma = scale if scale is not None else jnp.ones_like(var)
    shift = jnp.sum(jnp.square(bias)) if bias is not None else 0.0
    rhs_eps = jnp.sqrt(jnp.sum(gamma ** 2 * var / (var + 1e-5)) + shift)
    return {"rms_train": theory.feature_rms(_flat(v.train_features[-1])), "gamma_norm": g,
            "beta_norm": bt, "prop221_rhs": jnp.sqrt(g ** 2 + bt ** 2),
            "prop221_rhs_eps": rhs_eps}


def _nc1_trace(h, y, C):
    """tr(Sigma_W) / tr(Sigma_B) (no pseudo-inverse): NC1 without the 1/s_j^2 weights that make
    it explode when the class means nearly span fewer than C-1 directions."""
    mu = metrics.class_means(h, y, C)
    within = jnp.mean(jnp.sum(jnp.square(h - mu[y]), axis=1))
    between = jnp.mean(jnp.sum(jnp.square(mu - jnp.mean(mu, axis=0)), axis=1))
    return within / between


def per_layer(v: RunView) -> Dict[str, jax.Array]:
    """Per-layer arrays `layer_<key>` (L,) of `metrics.layerwise` over the model's features (BN in
    eval mode, uncentered cosines: the thesis' measures), and the cosine measures of the network's
    output (the logits, layer L of Conjecture 3.2.1, whose transition from layer L-1 the
    conjecture covers too) as `output_<key>`.

    What the mid-layer "instability" (max inter > 0, NC1 in the thousands at perfect NCC
    accuracy) survives: `layer_train_<key>` is the same report with BN in train mode (whole-set
    statistics instead of running averages), `layer_{eval,train}_centered_<cos key>` the cosine
    measures after removing the global mean mu_G, and `layer_{eval,train}_nc1_trace`
    tr(Sigma_W) / tr(Sigma_B). `layer_spectrum` adds the class means' spectrum."""
    C = v.num_classes
    feats = {"eval": [_flat(f) for f in v.eval[1]], "train": [_flat(f) for f in v.train_features]}
    lw = metrics.layerwise(feats["eval"], v.y, C)
    out = {f"layer_{k}": a for k, a in lw.items()}
    # every layer's (C, C) class-mean cosines (BN in eval mode, uncentered), as `cosine_matrix`
    out["layer_cosine_matrix"] = jnp.stack([metrics.cosine_similarity_matrix(f, v.y, C)
                                            for f in feats["eval"]])
    out.update({f"layer_train_{k}": a
                for k, a in metrics.layerwise(feats["train"], v.y, C).items()})
    for mode, fs in feats.items():
        cos = [cos_summary(metrics.cosine_similarity_matrix(f, v.y, C, center=True), C)
               for f in fs]
        out.update({f"layer_{mode}_centered_{k}": jnp.stack([c[k] for c in cos])
                    for k in cos[0]})
        out[f"layer_{mode}_nc1_trace"] = jnp.stack([_nc1_trace(f, v.y, C) for f in fs])
    G = metrics.cosine_similarity_matrix(v.logits, v.y, C)
    off = ~jnp.eye(C, dtype=bool)
    out.update(output_min_intra=jnp.min(jnp.diag(G)), output_mean_intra=jnp.mean(jnp.diag(G)),
               output_max_inter=jnp.max(jnp.where(off, G, -jnp.inf)),
               output_mean_inter=jnp.sum(jnp.where(off, G, 0.0)) / off.sum())
    return out


def layer_spectrum(v: RunView) -> Dict[str, jax.Array]:
    """How many directions the class means of each layer span (BN eval mode;
    `metrics.class_mean_spectrum`): `layer_spectrum` (L, C) the singular values of the centred
    class-mean matrix over the largest, `layer_effective_rank` (L,) its entropy effective rank
    (C - 1 for a simplex ETF), `layer_raw_effective_rank` (L,) that of the uncentred class means
    (what the uncentred cosines see). Part of the per-layer report (`layers=True`)."""
    spec = [(metrics.class_mean_spectrum(_flat(f), v.y, v.num_classes),
             metrics.class_mean_spectrum(_flat(f), v.y, v.num_classes, center=False))
            for f in v.eval[1]]
    return {"layer_spectrum": jnp.stack([c["spectrum"] for c, _ in spec]),
            "layer_effective_rank": jnp.stack([c["effective_rank"] for c, _ in spec]),
            "layer_raw_effective_rank": jnp.stack([r["effective_rank"] for _, r in spec])}


def cosine_matrix(v: RunView) -> Dict[str, jax.Array]:
    """`cosine_matrix` (C, C): the thesis' class-mean cosines of the last-layer features h,
    G[c, c'] = <u_c, u_c'> with u_c the mean of the unit vectors h_i / ||h_i|| of class c
    (`metrics.cosine_similarity_matrix`): intra_c on the diagonal, inter_cc' off it, so every
    class pair's cosine is there, not only the extremes `min_intra` / `max_inter`."""
    return {"cosine_matrix": metrics.cosine_similarity_matrix(v.h, v.y, v.num_classes)}


DEFAULT_REPORTERS: tuple = (loss_accuracy, collapse, cosine_matrix, theory_quantities,
                             theorem_bounds, prop221)
#: The per-layer report (`layers=True`).
LAYER_REPORTERS: tuple = (per_layer, layer_spectrum)


# built-in reporters are named by their function names in checkpoint identities
for _reporter in (loss_accuracy, collapse, cosine_matrix, theory_quantities, theorem_bounds,
                  prop221, per_layer, layer_spectrum):
    _reporter.nc_jax_name = _reporter.__name__


def run_report(state: TrainState, x, y, task: Task, *, layers: bool = False,
               reporters: Sequence[Reporter] = DEFAULT_REPORTERS) -> Dict[str, jax.Array]:
    """Everything the experiments report for one trained run (whole training set, BN in eval
    mode unless a reporter says otherwise): the union of the reporters' dicts, plus the per-layer
    reporters `LAYER_REPORTERS` with `layers=True`."""
    v = RunView(task, state, x, y)
    out: Dict[str, jax.Array] = {}
    for rep in tuple(reporters) + (LAYER_REPORTERS if layers else ()):
        out.update(rep(v))
    return out


#: Keys of the collapse report kept out of the curves recorded during training (they are in the
#: final report): a mapped run's curves are bit-identical on one device and on several, and XLA
#: fuses the Gram matrix of `etf_error` differently under `shard_map` (a last-bit change).
_FINAL_ONLY = frozenset(metrics.REPORT_EXTRA + metrics.WEIGHT_EXTRA + metrics.BIAS_KEYS)


def record_fn(task: Task, reporters: Sequence[Reporter] = (collapse,)) -> Callable:
    """`(state, x, y) -> {name: scalar}` for NC during training, inside the compiled loop:
    full-set `loss` and `accuracy` (BN eval mode) and the reporters' keys (default: the
    collapse report of the last-layer features, without the keys in `_FINAL_ONLY`)."""

    def record(state: TrainState, x, y) -> Dict[str, jax.Array]:
        v = RunView(task, state, x, y)
        out = _loss_accuracy(task, v.logits, y)
        for rep in reporters:
            out.update({k: a for k, a in rep(v).items() if k not in _FINAL_ONLY})
        return out

    # the checkpoint identity names the recorder by its reporters, never by this module's path
    record.nc_jax_name = "record:" + ",".join(callable_name(r) for r in reporters)
    return record


def sweep_reports(states: TrainState, x, y, task: Task, *, layers: bool = False,
                  batch_size: int = 1,
                  reporters: Sequence[Reporter] = DEFAULT_REPORTERS) -> Dict[str, np.ndarray]:
    """`run_report` for every run of stacked `states` (leading run axis K). Returns {name: (K, ...)}.

    One jitted single-run program, called on `batch_size` runs at a time (vmapped when > 1), so a
    deep, wide sweep never holds every run's full-set activations at once. A host loop over runs
    rather than `lax.map`: `lax.map` around the per-layer report (eigendecompositions inside a
    loop) was seen to deadlock XLA:CPU's thread pool on a 2-core machine (15-layer sweep).
    Each per-layer reporter is a program of its own, so asking for it changes no other number
    (one program for both let XLA fuse them differently: a last-bit change of rms_train).
    """
    k = int(np.shape(jax.tree.leaves(states.step)[0])[0])
    step = max(1, min(int(batch_size), k))
    programs = [tuple(reporters)] + ([(r,) for r in LAYER_REPORTERS] if layers else [])
    out: Dict[str, np.ndarray] = {}
    for reps in programs:
        fn = functools.partial(run_report, x=x, y=y, task=task, layers=False, reporters=reps)
        one = jax.jit(jax.vmap(fn))
        parts = []
        for start in range(0, k, step):
            idx = np.arange(start, min(start + step, k))
            parts.append(jax.tree.map(np.asarray, one(jax.tree.map(lambda a: a[idx], states))))
        out.update({key: np.concatenate([p[key] for p in parts]) for key in parts[0]})
    return out


#: NCC error threshold of the epsilon-effective depth (Definition 3.2.2). The thesis does not
#: give its epsilon; 1% error is "near-perfect NCC accuracy".
EFFECTIVE_DEPTH_EPS = 0.01
#: A run is converged when it reaches this train accuracy (BN eval mode, whole set): the thesis
#: keeps only runs with perfect training accuracy.
CONVERGED_ACCURACY = 1.0


def py(v):
    """numpy / jax scalar or array -> JSON-friendly Python (NaN and inf -> None)."""
    a = np.asarray(v)
    if a.ndim == 0:
        x = a.item()
        if isinstance(x, float) and not np.isfinite(x):
            return None
        return x
    return [py(e) for e in a]
