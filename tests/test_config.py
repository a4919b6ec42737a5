"""Config validation: every bad value is rejected at construction with a message that names the
field and the allowed range; configs survive a to_dict / from_dict round trip."""
import dataclasses
import json
import math

import pytest

from nc_jax.config import (MAX_SEED, PRESETS, ConfigError, DataConfig, ModelConfig, OptimConfig,
                           SweepConfig, preset)
from tests.helpers import tiny_config

BAD_MODEL = [
    (dict(depth=1), r"model\.depth must be >= 2, got 1"),
    (dict(depth=0), r"model\.depth must be >= 2, got 0"),
    (dict(depth=2.5), r"model\.depth must be an integer"),
    (dict(width=0), r"model\.width must be >= 1, got 0"),
    (dict(width=-3), r"model\.width must be >= 1, got -3"),
    (dict(bn="batch"), r"model\.bn must be one of \('affine', 'plain', 'none'\), got 'batch'"),
]


@pytest.mark.parametrize("changes, msg", BAD_MODEL)
def test_bad_model_values(changes, msg):
    with pytest.raises(ConfigError, match=msg):
        ModelConfig(**changes)


BAD_OPTIM = [
    (dict(lr=-0.1), r"optim\.lr must be > 0, got -0\.1"),
    (dict(lr=0.0), r"optim\.lr must be > 0"),
    (dict(lr=math.nan), r"optim\.lr must be finite, got nan"),
    (dict(lr=math.inf), r"optim\.lr must be finite, got inf"),
    (dict(lr="0.1"), r"optim\.lr must be a number"),
    (dict(momentum=1.0), r"optim\.momentum must be < 1"),
    (dict(momentum=-0.5), r"optim\.momentum must be >= 0"),
    (dict(epochs=0), r"optim\.epochs must be >= 1"),
    (dict(batch_size=0), r"optim\.batch_size must be >= 1"),
    (dict(lr_decay_factor=0.0), r"optim\.lr_decay_factor must be > 0"),
    (dict(weight_decay_mode="l2"), r"optim\.weight_decay_mode must be one of"),
    (dict(decay_mask="some"), r"optim\.decay_mask must be one of"),
    (dict(lr_decay_epochs=(10, 0)), r"optim\.lr_decay_epochs\[i\] must be >= 1"),
]


@pytest.mark.parametrize("changes, msg", BAD_OPTIM)
def test_bad_optim_values(changes, msg):
    with pytest.raises(ConfigError, match=msg):
        OptimConfig(**changes)


def test_bad_data_values():
    with pytest.raises(ConfigError, match=r"data\.num_classes must be >= 2, got 1"):
        DataConfig(num_classes=1, n=100)
    with pytest.raises(ConfigError, match=r"data\.kind must be one of"):
        DataConfig(kind="cifar")
    with pytest.raises(ConfigError, match=r"data\.n \(101\) must be a multiple of data\.num_cl"):
        DataConfig(n=101)
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        DataConfig(kind="npz")


@pytest.mark.parametrize("wds, msg", [
    ((1e-4, -1e-3), r"weight_decays\[1\] must be >= 0, got -0\.001"),
    ((math.nan,), r"weight_decays\[0\] must be finite, got nan"),
    ((1e-3, math.inf), r"weight_decays\[1\] must be finite, got inf"),
    (("big",), r"weight_decays\[0\] must be a number, got 'big'"),
    ((None,), r"weight_decays\[0\] must be a number, got None"),
    ((), r"weight_decays must not be empty"),
    ("1e-3", r"weight_decays must be a sequence of numbers"),
])
def test_bad_weight_decays(wds, msg):
    with pytest.raises(ConfigError, match=msg):
        SweepConfig(weight_decays=wds)


def test_bad_sweep_values():
    with pytest.raises(ConfigError, match=r"seeds\[1\] must be >= 0, got -1"):
        SweepConfig(seeds=(0, -1))
    # seeds go through uint32: 2**32 would silently be seed 0 again
    with pytest.raises(ConfigError, match=rf"seeds\[0\] must be <= {MAX_SEED}"):
        SweepConfig(seeds=(2 ** 32,))
    SweepConfig(seeds=(MAX_SEED,))
    with pytest.raises(ConfigError, match=r"seeds must be distinct"):
        SweepConfig(seeds=(1, 1))
    with pytest.raises(ConfigError, match=r"checkpoint_every must be >= 0, got -5"):
        SweepConfig(checkpoint_every=-5)
    with pytest.raises(ConfigError, match=r"record_every must be >= 0"):
        SweepConfig(record_every=-1)
    with pytest.raises(ConfigError, match=r"runs_per_device must be >= 0, got -2"):
        SweepConfig(runs_per_device=-2)
    with pytest.raises(ConfigError, match=r"runs_per_device must be an integer"):
        SweepConfig(runs_per_device=1.5)
    with pytest.raises(ConfigError, match=r"model must be a ModelConfig, got dict"):
        SweepConfig(model={"depth": 3})


def test_batch_size_larger_than_the_data():
    with pytest.raises(ConfigError, match=r"optim\.batch_size \(256\) must be <= data\.n \(200\)"):
        SweepConfig(optim=OptimConfig(batch_size=256), data=DataConfig(n=200))
    SweepConfig(optim=OptimConfig(batch_size=200), data=DataConfig(n=200))  # equal is fine


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError,
                       match=r"unknown preset 'huge'; known presets: \['demo', 'paper'\]"):
        preset("huge")
    for name in PRESETS:
        assert preset(name) is PRESETS[name]


def test_replace_revalidates():
    cfg = tiny_config()
    with pytest.raises(ConfigError, match=r"model\.depth must be >= 2"):
        cfg.replace(model=dataclasses.replace(cfg.model, depth=1))


def test_dict_round_trip_through_json():
    for cfg in [tiny_config(record_every=2, checkpoint_every=4), *PRESETS.values(),
                tiny_config(optim=OptimConfig(lr_decay_epochs=(2, 3), epochs=4, batch_size=32))]:
        back = SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg


def test_from_dict_names_unknown_fields_and_fills_defaults():
    d = tiny_config().to_dict()
    d["optim"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['optim\.lrr'\]"):
        SweepConfig.from_dict(d)
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['epochs'\]"):
        SweepConfig.from_dict({"epochs": 3})
    with pytest.raises(ConfigError, match=r"model\.width must be >= 1"):
        SweepConfig.from_dict({"model": {"width": 0}})
    assert SweepConfig.from_dict({"seeds": [3]}) == SweepConfig(seeds=(3,))


@pytest.mark.parametrize("d, msg", [
    # a string is not parsed character by character ("weight_decays[1] must be a number, got 'e'")
    ({"weight_decays": "1e-4"}, r"weight_decays must be a list of numbers, got '1e-4' \(a string"),
    ({"weight_decays": [True]}, r"weight_decays\[0\] must be a number, got True"),
    ({"weight_decays": ["1e-4"]}, r"weight_decays\[0\] must be a number, got '1e-4'"),
    ({"seeds": "0"}, r"seeds must be a list of numbers, got '0'"),
    ({"seeds": [True]}, r"seeds\[0\] must be an integer, got True"),
    ({"data": {"standardize": "no"}}, r"data\.standardize must be true or false, got 'no'"),
    ({"data": {"standardize": 1}}, r"data\.standardize must be true or false, got 1"),
    ({"data": {"kind": "npz", "path": 3}}, r"data\.path must be a file name, got 3"),
    ({"optim": {"epochs": 10, "lr_decay_epochs": [5, 10]}},
     r"optim\.lr_decay_epochs\[1\] must be < optim\.epochs \(10\), got 10"),
    ({"optim": {"epochs": 10, "lr_decay_epochs": "5"}},
     r"optim\.lr_decay_epochs must be a list of epochs, got '5'"),
    ({"optim": {"epochs": 10, "lr_decay_epochs": 5}},
     r"optim\.lr_decay_epochs must be a list of epochs, got 5"),
])
def test_from_dict_rejects_values_that_would_be_misread(d, msg):
    with pytest.raises(ConfigError, match=msg):
        SweepConfig.from_dict(d)


def test_from_dict_still_accepts_one_number_and_numpy_values():
    import numpy as np
    assert SweepConfig.from_dict({"weight_decays": 1e-4}).weight_decays == (1e-4,)
    assert SweepConfig(weight_decays=np.array([1e-4, 1e-3])).weight_decays == (1e-4, 1e-3)
    assert SweepConfig.from_dict({"data": {"standardize": True}}).data.standardize is True
    assert OptimConfig(epochs=10, lr_decay_epochs=(3, 9)).decay_epochs == (3, 9)
