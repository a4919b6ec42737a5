"""Figure 3.1's rule: every run that did not fail is drawn; a cell where some seed missed 100%
train accuracy gets a hollow marker; diverged and chance-level runs are left out."""
import numpy as np

from nc_jax.analysis import _plotting as plotting


def _run(wd, seed, acc, intra, group="affine", diverged=False):
    return {"group": group, "weight_decay": wd, "seed": seed, "train_accuracy": acc,
            "converged": acc == 1.0 and not diverged, "diverged": diverged,
            "min_intra": intra, "max_inter": -0.05}


RUNS = [_run(1e-3, 0, 1.0, 0.6), _run(1e-3, 1, 1.0, 0.8),            # both converged
        _run(1e-2, 0, 1.0, 0.9), _run(1e-2, 1, 0.998, 0.7),          # one seed below 100%
        _run(3e-2, 0, 0.1, 0.0), _run(3e-2, 1, None, None, diverged=True)]  # failed


def test_failed_and_seed_stats():
    assert [plotting.failed(r) for r in RUNS] == [False] * 4 + [True, True]
    all_ok = plotting.seed_stats(RUNS, "min_intra", converged_only=False)
    assert set(all_ok) == {("affine", 1e-3), ("affine", 1e-2)}
    np.testing.assert_allclose(all_ok[("affine", 1e-2)][:2], (0.8, 0.1))
    assert all_ok[("affine", 1e-2)][2] == 2
    conv = plotting.seed_stats(RUNS, "min_intra", converged_only=True)
    assert conv[("affine", 1e-2)] == (0.9, 0.0, 1)


def test_hollow_markers_mark_cells_with_a_seed_below_100(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    plotting.plot_wd_bn(RUNS, str(tmp_path / "f.png"))
    ax = figs[0].axes[0]
    filled, hollow = [], []
    for line in ax.get_lines():
        x = list(line.get_xdata())
        if line.get_marker() != "o" or not x:
            continue
        (hollow if line.get_markerfacecolor() == "white" else filled).extend(x)
    assert sorted(filled) == [1e-3, 1e-3]      # min intra and max inter of the converged cell
    assert sorted(hollow) == [1e-2, 1e-2]


def test_layer_modes_plot_draws_the_seed_mean_of_each_mode(monkeypatch, tmp_path):
    """One column per WD; the plotted curve of a mode is the per-layer mean over seeds; runs
    without the mode keys (older results) or failed runs draw nothing."""
    def layers(shift):
        keys = [p + s for p, _ in plotting.LAYER_MODES for s in ("max_inter", "min_intra")]
        keys += ["nc1", "train_nc1", "eval_nc1_trace", "train_nc1_trace"]
        return [{k: 0.1 * (i + 1) + shift + 0.01 * j for j, k in enumerate(keys)}
                for i in range(3)]
    runs = [dict(_run(1e-3, s, 1.0, 0.9), layers=layers(0.2 * s)) for s in (0, 1)]
    runs.append(dict(_run(1e-3, 2, 0.1, 0.0), layers=layers(5.0)))  # failed: left out
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    plotting.plot_layer_modes(runs, str(tmp_path / "m.png"))
    ax = figs[0].axes[0]                       # max inter, WD 1e-3
    eval_raw = ax.get_lines()[0]
    np.testing.assert_allclose(eval_raw.get_ydata(), np.array([0.1, 0.2, 0.3]) + 0.1)
    plotting.plot_layer_modes([dict(_run(1e-3, 0, 1.0, 0.9), layers=[{"max_inter": 0.1}])],
                              str(tmp_path / "n.png"))
    assert len(figs) == 1


def test_depth_plot_averages_the_seeds_that_did_not_fail(monkeypatch, tmp_path):
    """A zero network (chance accuracy, every cosine 1) would drag a panel's mean toward 1: it is
    left out of the per-layer means and named in the title with the converged count."""
    def run(seed, acc, intra):
        return {"weight_decay": 1e-2, "seed": seed, "train_accuracy": acc, "diverged": False,
                "converged": acc == 1.0, "effective_depth": 3,
                "layers": [{"ncc_accuracy": acc, "min_intra": v, "max_inter": 0.0} for v in intra]}
    runs = [run(0, 1.0, [0.2, 0.6]), run(1, 0.9, [0.4, 0.8]), run(2, 0.1, [1.0, 1.0])]
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    plotting.plot_depth(runs, str(tmp_path / "d.png"))
    ax = figs[0].axes[0]
    assert ax.get_title() == "WD 0.01: 1/3 converged, 1 failed"
    intra = [c for c in ax.containers if c.get_label() == "min intra"]
    np.testing.assert_allclose(intra[0].lines[0].get_ydata(), [0.3, 0.7])  # seeds 0 and 1 only
    # a first panel whose only seed failed stays empty; the legend goes to the next drawn one
    figs.clear()
    plotting.plot_depth([dict(runs[2], weight_decay=1e-5)] + runs, str(tmp_path / "d.png"))
    empty, drawn = figs[0].axes[:2]
    assert not empty.containers and empty.get_legend() is None
    assert drawn.get_legend() is not None


def test_weight_decay_zero_is_drawn_on_a_symlog_axis(tmp_path, monkeypatch):
    """A log axis cannot show WD 0 (a custom sweep may train without weight decay): with 0
    among the values the axis is symlog, linear below the smallest positive WD; a group that
    is no BN variant draws both its curves in one color."""
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    runs = [_run(wd, 0, 1.0, 0.5, group="sweep") for wd in (0.0, 1e-3, 1e-2)]
    plotting.plot_wd_bn(runs, str(tmp_path / "f.png"))
    plotting.plot_wd_bn(runs[:1], str(tmp_path / "g.png"))
    plotting.plot_wd_bn(runs[1:], str(tmp_path / "h.png"))
    assert [f.axes[0].get_xscale() for f in figs] == ["symlog", "linear", "log"]
    assert figs[0].axes[0].xaxis.get_transform().linthresh == 1e-3
    from matplotlib.colors import to_hex
    drawn = [line for line in figs[0].axes[0].get_lines()
             if list(line.get_xdata()) == [0.0, 1e-3, 1e-2]]  # lines and markers of both
    assert len(drawn) >= 4 and len({to_hex(line.get_color()) for line in drawn}) == 1


def test_theorem_plot_leaves_out_runs_without_a_rate(monkeypatch, tmp_path):
    """The zero network (alpha beta = 0) has no rate term (None in results.json): its point is
    left out of the rate panel, every other run is drawn in both panels."""
    runs = [dict(_run(1e-3, 0, 1.0, 0.9), loss_gap=1e-3, rate=20.0),
            dict(_run(1e-3, 1, 1.0, 0.8), loss_gap=2e-3, rate=30.0),
            dict(_run(5e-2, 0, 0.1, 0.0), loss_gap=-2.7e-8, rate=None)]
    figs = []
    monkeypatch.setattr(plotting, "_save", lambda fig, path: figs.append(fig))
    plotting.plot_theorem(runs, str(tmp_path / "t.png"))
    gap, rate = figs[0].axes[:2]
    n_points = lambda ax: [len(c.get_offsets()) for c in ax.collections]  # noqa: E731
    assert n_points(gap) == [3, 3] and n_points(rate) == [2, 2]
    np.testing.assert_allclose(sorted(rate.collections[0].get_offsets()[:, 0]), [20.0, 30.0])
