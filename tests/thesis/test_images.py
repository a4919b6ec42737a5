"""Experiment `images` (`nc_jax.thesis`): its presets, and the smoke preset end to end
with the held-out keys in results.json."""
import json
import os

import pytest

from nc_jax.config import THESIS_WEIGHT_DECAYS
from nc_jax.cli import experiment_main
from nc_jax.runs import get_experiment


def test_presets_follow_the_protocol():
    exp = get_experiment("images")
    assert exp.layers and exp.shared_data
    for name in exp.presets:
        configs = exp.configs(name)
        # shared data: every group trains on the same images with the same hold-out
        assert len({c.data for c in configs.values()}) == 1, name
        for g, c in configs.items():
            model, _, variant = g.partition(" ")
            assert c.model.name == model and variant in ("affine", "plain", "none", "ce",
                                                         "mse", "label_smoothing"), g
            assert c.data.kind == "mnist" and c.data.standardize and c.data.test_size > 0
            # conv models train one run at a time inside the program (3-4x vmap on CPU)
            assert c.vmap_runs == 1, g
            assert variant in ("affine", "plain", "none") or c.model.bn == "affine"
            assert c.loss.name == (variant if variant in ("ce", "mse", "label_smoothing")
                                   else "ce"), g
    paper = [p for p in exp.presets if p.startswith("paper")]
    runs = {model: 0 for model in ("cnn", "resnet", "loss")}
    for name in paper:
        for g, c in exp.configs(name).items():
            # the thesis protocol: its 7 WDs x 3 seeds, SGD lr 0.0679, momentum 0.9, batch 128
            assert c.weight_decays == THESIS_WEIGHT_DECAYS and c.seeds == (0, 1, 2), g
            assert (c.optim.lr, c.optim.momentum, c.optim.batch_size) == (0.0679, 0.9, 128)
            assert c.optim.lr_decay_factor == 0.1 and len(c.optim.decay_epochs) == 2
            assert c.data.test_size == 1000 and c.checkpoint_every > 0
            runs["loss" if "-loss" in name else c.model.name] += c.num_runs
    # 3 BN variants (or 3 losses) x 7 WDs x 3 seeds each, however the presets are split
    assert runs == {"cnn": 63, "resnet": 63, "loss": 63}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("images"))
    assert experiment_main("images", ["--preset", "smoke", "--out", out, "--quiet"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        return out, json.load(f)


def test_smoke_writes_train_and_heldout_measures(smoke):
    out, doc = smoke
    runs = doc["runs"]
    assert {r["group"] for r in runs} == {"cnn affine", "resnet none", "cnn mse"}
    assert doc["data"]["test_size"] == 4500 and doc["data"]["n"] == 500
    for r in runs:
        for k in ("test_loss", "test_accuracy", "test_ncc_accuracy_train_means",
                  "test_min_intra", "test_max_inter", "test_nc1", "train_accuracy",
                  "min_intra", "effective_depth"):
            assert k in r, (r["group"], k)
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["test_ncc_accuracy_train_means"] <= 1
        # per-block measures: one entry per GAP feature of the conv model
        n_blocks = r["depth"] if r["model"] == "cnn" else 4  # ResNet-8: stem + 3 blocks
        assert len(r["layers"]) == n_blocks
    assert {r["loss"] for r in runs} == {"ce", "mse"}
    for f in ("fig3_1_cnn.png", "fig3_1_cnn_heldout.png", "fig3_1_resnet.png",
              "losses_cnn.png", "training_curves_cnn_affine.png", "layers_resnet_none.png"):
        assert os.path.getsize(os.path.join(out, f)) > 1000, f


def test_smoke_replots_from_results_json(smoke):
    out, doc = smoke
    os.remove(os.path.join(out, "fig3_1_cnn.png"))
    assert experiment_main("images", ["--preset", "smoke", "--out", out, "--plot-only"]) == 0
    assert os.path.exists(os.path.join(out, "fig3_1_cnn.png"))


def test_plot_images_draws_training_and_heldout_panels(smoke, tmp_path, monkeypatch):
    from nc_jax.thesis import _images as ci
    out, doc = smoke
    drawn = {}

    def fake_plot_wd_bn(runs, path, **kw):
        drawn[os.path.basename(path)] = runs

    monkeypatch.setattr(ci, "plot_wd_bn", fake_plot_wd_bn)
    ci.plot_images(doc, str(tmp_path))
    assert sorted(drawn) == ["fig3_1_cnn.png", "fig3_1_cnn_centered.png",
                             "fig3_1_cnn_heldout.png", "fig3_1_resnet.png",
                             "fig3_1_resnet_centered.png", "fig3_1_resnet_heldout.png",
                             "losses_cnn.png", "losses_cnn_centered.png", "losses_cnn_heldout.png"]
    # the Figure 3.1 panel of a model: its BN groups, named by BN variant (the colors of
    # plot_wd_bn); the loss panel: the loss groups, named by loss
    assert {r["group"] for r in drawn["fig3_1_cnn.png"]} == {"affine"}
    assert {r["group"] for r in drawn["losses_cnn.png"]} == {"mse"}
    by_seed = {(r["group"], r["weight_decay"]): r for r in doc["runs"]}
    for r in drawn["fig3_1_cnn_heldout.png"]:
        src = by_seed[("cnn " + r["group"], r["weight_decay"])]
        assert (r["min_intra"], r["max_inter"]) == (src["test_min_intra"], src["test_max_inter"])
        assert r["train_accuracy"] == src["train_accuracy"]  # hollow / filled as in training
    for r in drawn["fig3_1_cnn.png"]:
        src = by_seed[("cnn " + r["group"], r["weight_decay"])]
        assert r["min_intra"] == src["min_intra"]
    for r in drawn["fig3_1_resnet_centered.png"]:  # the head's input, centered, eval mode
        last = by_seed[("resnet " + r["group"], r["weight_decay"])]["layers"][-1]
        assert (r["min_intra"], r["max_inter"]) == (last["eval_centered_min_intra"],
                                                    last["eval_centered_max_inter"])
    for name in ("cnn_affine", "resnet_none", "cnn_mse"):
        assert os.path.exists(tmp_path / f"training_curves_{name}.png")
        assert os.path.exists(tmp_path / f"layers_{name}.png")


def test_merge_joins_per_variant_results(smoke, tmp_path, capsys):
    from nc_jax.thesis import merge_main
    out, doc = smoke
    parts = []
    for i, groups in enumerate((("cnn affine", "cnn mse"), ("resnet none",))):
        part = dict(doc, configs={g: doc["configs"][g] for g in groups},
                    runs=[r for r in doc["runs"] if r["group"] in groups],
                    timing={g: doc["timing"][g] for g in groups}, wall_time_s=1.0 + i)
        d = tmp_path / f"part{i}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(part))
        parts.append(str(d))
    merged = str(tmp_path / "merged")
    assert merge_main(["--out", merged, "--preset", "smoke-merged", *parts]) == 0
    with open(os.path.join(merged, "results.json")) as f:
        m = json.load(f)
    assert m["preset"] == "smoke-merged" and m["wall_time_s"] == 3.0
    assert [r["group"] for r in m["runs"]] == ["cnn affine", "cnn affine", "cnn mse",
                                               "resnet none"]
    assert sorted(m["configs"]) == sorted(doc["configs"]) and m["data"] == doc["data"]
    assert os.path.exists(os.path.join(merged, "fig3_1_resnet.png"))
    # the same group twice is refused
    assert merge_main(["--out", str(tmp_path / "bad"), parts[0], parts[0]]) == 2
    assert "appear in another part" in capsys.readouterr().err
    # ... unless renamed: the group, its runs and its timing take the new name
    ren = str(tmp_path / "renamed")
    assert merge_main(["--out", ren, "--rename", "cnn affine=cnn ce", parts[0], parts[0]]) == 2
    assert "appear in another part" in capsys.readouterr().err  # renamed in both parts alike
    assert merge_main(["--out", ren, "--rename", "cnn affine = cnn ce", parts[0]]) == 0
    with open(os.path.join(ren, "results.json")) as f:
        r = json.load(f)
    assert [x["group"] for x in r["runs"]] == ["cnn ce", "cnn ce", "cnn mse"]
    assert sorted(r["configs"]) == ["cnn ce", "cnn mse"] and sorted(r["timing"]) == sorted(
        r["configs"]) and r["renamed_groups"] == {"cnn affine": "cnn ce"}
    assert r["configs"]["cnn ce"] == doc["configs"]["cnn affine"]
    assert os.path.exists(os.path.join(ren, "losses_cnn.png"))
    for bad, msg in ((["--rename", "cnn plain=x"], "no part has"),
                     (["--rename", "cnn affine"], "not of the form OLD=NEW")):
        assert merge_main(["--out", ren, *bad, parts[0]]) == 2
        assert msg in capsys.readouterr().err


def test_group_name_does_not_enter_the_runs(tmp_path):
    """Why `merge --rename` may stand one group in for another with an equal config: the same
    config trained under two group names gives bit-identical runs."""
    import numpy as np

    from nc_jax.thesis._images import presets
    from nc_jax.runs import run_group
    cfg = presets()["smoke"]()["cnn affine"]
    a, _ = run_group(cfg, group="cnn affine", progress=False)
    b, _ = run_group(cfg, group="cnn ce", progress=False)
    assert [x["group"] for x in b] == ["cnn ce"] * len(a)
    for x, y in zip(a, b):
        for k in ("train_accuracy", "train_loss", "min_intra", "mean_inter", "test_accuracy"):
            np.testing.assert_array_equal(x[k], y[k])
