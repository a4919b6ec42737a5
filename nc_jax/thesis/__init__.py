"""The experiments of the thesis (arXiv 2309.04644), registered by name for `nc_jax.cli
--experiment NAME` and the thin scripts in `experiments/`: their presets (groups of
`SweepConfig`s) and figures.

- fig3_1: last-layer NC against weight decay for affine / plain / no BN (Figure 3.1);
- fig3_3: NC across the layers of a 15-layer affine-BN MLP (Figure 3.3, depth minimization);
- data_complexity: conic-hull data vs 3- and 6-layer teachers at one weight decay;
- real_data: the Figure 3.1 grid on MNIST-5k (or any `--data x.npz`);
- images: CNN / ResNet on MNIST-5k with a hold-out, and the loss comparison;
- product_law: separate decays on the last BN layer and the head (their product);
- width: the mid-layer rise of max inter at widths 128 / 256 / 512.

Project code, kept apart from the library: nothing in `nc_jax` but the CLI imports it.
"""
from nc_jax.thesis import _catalog, _images, _product_law, _width  # noqa: F401  (importing registers the experiments)
from nc_jax.thesis._catalog import DATA_COMPLEXITY_WD, bn_grid
from nc_jax.thesis._images import plot_images
from nc_jax.thesis._merge import merge_main, merge_results

__all__ = ["DATA_COMPLEXITY_WD", "bn_grid", "merge_main", "merge_results", "plot_images"]
