"""Tiny configurations shared by the tests (fast on a 2-core CPU)."""
import jax

from nc_jax.config import DataConfig, ModelConfig, OptimConfig, SweepConfig
from nc_jax.data import teacher_dataset


def tiny_config(**changes) -> SweepConfig:
    cfg = SweepConfig(
        model=ModelConfig(depth=3, width=16, bn="affine"),
        optim=OptimConfig(lr=0.05, epochs=3, batch_size=32),
        data=DataConfig(n=240, dim=8, num_classes=4, teacher_width=16),
        weight_decays=(1e-4, 5e-3),
        seeds=(0, 1),
    )
    return cfg.replace(**changes)


_DATA = {}


def tiny_data(cfg: SweepConfig):
    d = cfg.data
    k = (d.n, d.dim, d.num_classes, d.teacher_width, d.seed)
    if k not in _DATA:
        _DATA[k] = teacher_dataset(jax.random.key(d.seed), n=d.n, dim=d.dim,
                                   num_classes=d.num_classes, teacher_width=d.teacher_width)
    return _DATA[k]


def tiny_task(cfg: SweepConfig, data, **kwargs):
    """The Task of `cfg` on `data` (model, loss and optimizer from the config unless given)."""
    from nc_jax.training import make_task
    return make_task(cfg, data, **kwargs)
