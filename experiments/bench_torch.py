"""The PyTorch side of `bench_vs_torch.py`: nc-jax's MLP and optimizer written for PyTorch.

Imports torch and numpy only (never JAX), so a benchmark worker that trains with PyTorch runs
no JAX thread pool next to it.

* `TorchMLP`: `nc_jax.models.MLP` (Definition 3.2.1): (Linear -> ReLU -> BatchNorm1d) per hidden
  block, then a Linear head. PyTorch's default Linear init is what nc-jax's `TorchDense` mimics;
  BN momentum 0.1 (PyTorch convention, which nc-jax's BatchNorm follows: running = 0.9 old +
  0.1 batch, unbiased running variance), eps 1e-5.
* `train_sequential`: what most users write: one nn.Module per run, a DataLoader (shuffle, no
  drop_last, like nc-jax's epoch: full batches plus the partial one), torch.optim.SGD(lr,
  momentum 0.9, weight_decay on every parameter = nc-jax's coupled decay "all") with
  MultiStepLR at the same epochs, a loop over runs.
* `BatchedMLP` / `train_batched`: the same K runs hand-batched: parameters (K, in, out),
  torch.baddbmm, BatchNorm over the batch axis of (K, B, d) so every run keeps its own batch
  statistics, per-run weight decay as a (K,) tensor, SGD + momentum written out.

Both trainers return per-run final loss / accuracy on the whole set with BN in eval mode and,
on request, the last-layer features, logits and classifier for the NC measures. Runs that share
a seed share the initialization and the data order (as in nc-jax); the random numbers
themselves are PyTorch's, so torch and nc-jax agree in distribution, not bit for bit.
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.1  # PyTorch convention = nc_jax.models.BatchNorm's default
BN_EPS = 1e-5
EVAL_CHUNK = 4096  # samples per eval forward of the batched model (bounds K x chunk x width)


def default_threads() -> int:
    """The CPUs this process may use: XLA's CPU client uses all of them, while torch's default
    counts physical cores (1 on a 2-vCPU VM), which would not be a fair comparison."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Protocol:
    """nc-jax's OptimConfig defaults (the thesis' Section 3.1.1)."""

    lr: float = 0.0679
    momentum: float = 0.9
    batch_size: int = 128
    lr_decay_epochs: Optional[Tuple[int, ...]] = None
    lr_decay_factor: float = 0.1

    def decay_epochs(self, epochs: int) -> Tuple[int, ...]:
        """As `nc_jax.config.OptimConfig.decay_epochs`: at 1/3 and 2/3 unless given."""
        if self.lr_decay_epochs is not None:
            return tuple(self.lr_decay_epochs)
        return tuple(e for e in (epochs // 3, (2 * epochs) // 3) if e >= 1)

    def lr_at(self, epoch: int, epochs: int) -> float:
        """MultiStepLR's rate during `epoch` (0-based) = nc-jax's step schedule, whose
        boundaries are decay_epoch * steps_per_epoch."""
        n = sum(epoch >= m for m in self.decay_epochs(epochs))
        return self.lr * self.lr_decay_factor ** n


class TorchMLP(nn.Module):
    """`nc_jax.models.MLP` in PyTorch; `bn` is "affine", "plain" (no BN parameters) or "none"."""

    def __init__(self, in_dim: int, width: int, num_classes: int, depth: int = 6,
                 bn: str = "affine", bn_momentum: float = BN_MOMENTUM, eps: float = BN_EPS):
        super().__init__()
        if bn not in ("affine", "plain", "none"):
            raise ValueError(f"bn must be affine, plain or none, got {bn!r}")
        self.dense = nn.ModuleList()
        self.bn = nn.ModuleList()
        d = in_dim
        for _ in range(depth - 1):
            self.dense.append(nn.Linear(d, width))
            self.bn.append(nn.Identity() if bn == "none" else
                           nn.BatchNorm1d(width, eps=eps, momentum=bn_momentum,
                                          affine=bn == "affine"))
            d = width
        self.head = nn.Linear(width, num_classes)

    def forward(self, x, return_features: bool = False):
        h = x.reshape(x.shape[0], -1)
        feats = []
        for dense, bn in zip(self.dense, self.bn):
            h = bn(F.relu(dense(h)))
            feats.append(h)
        logits = self.head(h)
        return (logits, feats) if return_features else logits

    def load_flax(self, params, batch_stats=None) -> "TorchMLP":
        """Copy nc-jax MLP variables (any arrays numpy can read) into this module: a Flax
        kernel (in, out) becomes a torch weight (out, in)."""
        def t(a):
            return torch.as_tensor(np.array(a, np.float32))  # a writable copy

        with torch.no_grad():
            for i, (dense, bn) in enumerate(zip(self.dense, self.bn)):
                dense.weight.copy_(t(params[f"dense_{i}"]["kernel"]).T)
                dense.bias.copy_(t(params[f"dense_{i}"]["bias"]))
                if isinstance(bn, nn.BatchNorm1d):
                    if bn.affine:
                        bn.weight.copy_(t(params[f"bn_{i}"]["scale"]))
                        bn.bias.copy_(t(params[f"bn_{i}"]["bias"]))
                    if batch_stats is not None:
                        bn.running_mean.copy_(t(batch_stats[f"bn_{i}"]["mean"]))
                        bn.running_var.copy_(t(batch_stats[f"bn_{i}"]["var"]))
            self.head.weight.copy_(t(params["head"]["kernel"]).T)
            self.head.bias.copy_(t(params["head"]["bias"]))
        return self


def make_models(seeds: Sequence[int], in_dim: int, width: int, num_classes: int, depth: int = 6,
                bn: str = "affine") -> List[TorchMLP]:
    """One TorchMLP per run, initialized from torch.manual_seed(seed): equal seeds, equal init."""
    models = []
    for s in seeds:
        torch.manual_seed(int(s))
        models.append(TorchMLP(in_dim, width, num_classes, depth, bn))
    return models


def _as_tensors(x, y):
    return (torch.as_tensor(np.array(x, np.float32)),  # a copy: JAX hands out read-only arrays
            torch.as_tensor(np.asarray(y, np.int64)))


def _outputs(logits: torch.Tensor, y: torch.Tensor):
    return (F.cross_entropy(logits, y).item(),
            (logits.argmax(-1) == y).float().mean().item())


def train_sequential(x, y, num_classes: int, width: int, weight_decays: Sequence[float],
                     seeds: Sequence[int], epochs: int, protocol: Protocol = Protocol(),
                     depth: int = 6, bn: str = "affine", threads: Optional[int] = None,
                     return_features: bool = False) -> dict:
    """K runs one after another, each the textbook PyTorch loop. Returns {"loss", "accuracy"}
    (K,) (whole set, BN eval mode) and with `return_features` also "features" (K, N, width)
    (last hidden block, post-BN), "logits" (K, N, C), "W" (K, C, width), "b" (K, C)."""
    torch.set_num_threads(threads or default_threads())
    xt, yt = _as_tensors(x, y)
    ds = torch.utils.data.TensorDataset(xt, yt)
    out = {"loss": [], "accuracy": [], "features": [], "logits": [], "W": [], "b": []}
    for wd, seed in zip(weight_decays, seeds):
        model = make_models([seed], xt.shape[1], width, num_classes, depth, bn)[0]
        opt = torch.optim.SGD(model.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                              weight_decay=float(wd))
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=list(protocol.decay_epochs(epochs)), gamma=protocol.lr_decay_factor)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=protocol.batch_size, shuffle=True, drop_last=False,
            generator=torch.Generator().manual_seed(int(seed)))
        model.train()
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            logits, feats = model(xt, return_features=True)
        loss, acc = _outputs(logits, yt)
        out["loss"].append(loss)
        out["accuracy"].append(acc)
        if return_features:
            out["features"].append(feats[-1].numpy())
            out["logits"].append(logits.numpy())
            out["W"].append(model.head.weight.detach().numpy().copy())
            out["b"].append(model.head.bias.detach().numpy().copy())
    return _pack(out, return_features)


def _pack(out: dict, return_features: bool) -> dict:
    res = {"loss": np.asarray(out["loss"]), "accuracy": np.asarray(out["accuracy"])}
    if return_features:
        res.update({k: np.stack([np.asarray(a) for a in out[k]])
                    for k in ("features", "logits", "W", "b")})
    return res


class BatchedMLP:
    """K TorchMLPs as stacked tensors: Dense kernels (K, in, out), biases (K, 1, out), BN
    gamma / beta (K, 1, d) and running statistics (K, 1, d). Inputs are (K, B, d_in)."""

    def __init__(self, models: Sequence[TorchMLP], weight_decays: Sequence[float],
                 momentum: float = 0.9):
        def stack(ts, shape=None):
            t = torch.stack([a.detach().clone() for a in ts])
            return t.reshape(shape) if shape is not None else t

        k = len(models)
        m0 = models[0]
        self.eps, self.bn_momentum = BN_EPS, BN_MOMENTUM
        self.kernels = [stack([m.dense[i].weight.T for m in models])
                        for i in range(len(m0.dense))] + [stack([m.head.weight.T for m in models])]
        self.biases = [stack([m.dense[i].bias for m in models], (k, 1, -1))
                       for i in range(len(m0.dense))] + [
            stack([m.head.bias for m in models], (k, 1, -1))]
        self.bn_kind = ("none" if isinstance(m0.bn[0], nn.Identity) else
                        "affine" if m0.bn[0].affine else "plain")
        self.gammas, self.betas, self.run_mean, self.run_var = [], [], [], []
        if self.bn_kind != "none":
            for i in range(len(m0.bn)):
                if self.bn_kind == "affine":
                    self.gammas.append(stack([m.bn[i].weight for m in models], (k, 1, -1)))
                    self.betas.append(stack([m.bn[i].bias for m in models], (k, 1, -1)))
                self.run_mean.append(stack([m.bn[i].running_mean for m in models], (k, 1, -1)))
                self.run_var.append(stack([m.bn[i].running_var for m in models], (k, 1, -1)))
        self.params = self.kernels + self.biases + self.gammas + self.betas
        for p in self.params:
            p.requires_grad_(True)
        self.momentum = momentum
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.wd = torch.as_tensor(np.asarray(weight_decays, np.float32))

    @property
    def num_runs(self) -> int:
        return self.kernels[0].shape[0]

    def _bn(self, i: int, h, train: bool):
        if self.bn_kind == "none":
            return h
        if train:
            # statistics over each run's own batch (axis 1), never across runs
            mean = h.mean(1, keepdim=True)
            var = (h - mean).square().mean(1, keepdim=True)
            with torch.no_grad():
                n = h.shape[1]
                m = self.bn_momentum
                self.run_mean[i].mul_(1 - m).add_(m * mean)
                self.run_var[i].mul_(1 - m).add_(m * var * (n / max(n - 1, 1)))
        else:
            mean, var = self.run_mean[i], self.run_var[i]
        h = (h - mean) * torch.rsqrt(var + self.eps)
        if self.bn_kind == "affine":
            h = h * self.gammas[i] + self.betas[i]
        return h

    def forward(self, x, train: bool, return_features: bool = False):
        """x (K, B, d_in) -> logits (K, B, C) (and the post-BN features of every block)."""
        h = x
        feats = []
        for i in range(len(self.kernels) - 1):
            h = self._bn(i, F.relu(torch.baddbmm(self.biases[i], h, self.kernels[i])), train)
            feats.append(h)
        logits = torch.baddbmm(self.biases[-1], h, self.kernels[-1])
        return (logits, feats) if return_features else logits

    def step(self, xb, yb, lr: float) -> torch.Tensor:
        """One SGD step of every run on its own batch xb (K, B, d), yb (K, B); returns the K
        losses. torch.optim.SGD's update with a per-run decay: g += wd_k p; buf = mu buf + g;
        p -= lr buf (its first step sets buf = g, which is what mu * 0 + g gives)."""
        k, b = yb.shape
        logits = self.forward(xb, train=True)
        losses = F.cross_entropy(logits.reshape(k * b, -1), yb.reshape(-1),
                                 reduction="none").view(k, b).mean(1)
        for p in self.params:
            p.grad = None
        losses.sum().backward()  # runs are independent: d(sum)/d(run k) = d(loss_k)
        with torch.no_grad():
            for p, buf in zip(self.params, self.bufs):
                wd = self.wd.view(-1, *([1] * (p.ndim - 1)))
                g = p.grad.addcmul_(wd, p)
                buf.mul_(self.momentum).add_(g)
                p.sub_(lr * buf)
        return losses.detach()

    @torch.no_grad()
    def evaluate(self, x, y, return_features: bool = False) -> dict:
        """Whole-set loss / accuracy per run with BN in eval mode, in chunks of samples."""
        k = self.num_runs
        loss_sum = torch.zeros(k, dtype=torch.float64)
        correct = torch.zeros(k, dtype=torch.float64)
        feats, logits_all = [], []
        for xc, yc in zip(x.split(EVAL_CHUNK), y.split(EVAL_CHUNK)):
            logits, fs = self.forward(xc.expand(k, *xc.shape), train=False, return_features=True)
            yk = yc.expand(k, -1)
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yk.reshape(-1),
                                        reduction="none").view(k, -1).sum(1).double()
            correct += (logits.argmax(-1) == yk).sum(1).double()
            if return_features:
                feats.append(fs[-1])
                logits_all.append(logits)
        n = x.shape[0]
        out = {"loss": (loss_sum / n).numpy(), "accuracy": (correct / n).numpy()}
        if return_features:
            out.update(features=torch.cat(feats, 1).numpy(),
                       logits=torch.cat(logits_all, 1).numpy(),
                       W=self.kernels[-1].detach().transpose(1, 2).numpy().copy(),
                       b=self.biases[-1].detach()[:, 0].numpy().copy())
        return out


def train_batched(x, y, num_classes: int, width: int, weight_decays: Sequence[float],
                  seeds: Sequence[int], epochs: int, protocol: Protocol = Protocol(),
                  depth: int = 6, bn: str = "affine", threads: Optional[int] = None,
                  return_features: bool = False) -> dict:
    """The K runs of `train_sequential` (same inits) as one hand-batched ensemble; each run
    draws its own data order per epoch (runs that share a seed share it). Same outputs."""
    torch.set_num_threads(threads or default_threads())
    xt, yt = _as_tensors(x, y)
    n, bs = xt.shape[0], protocol.batch_size
    ens = BatchedMLP(make_models(seeds, xt.shape[1], width, num_classes, depth, bn),
                     weight_decays, protocol.momentum)
    gens = {int(s): torch.Generator().manual_seed(int(s)) for s in seeds}
    for epoch in range(epochs):
        lr = protocol.lr_at(epoch, epochs)
        by_seed = {s: torch.randperm(n, generator=g) for s, g in gens.items()}
        perm = torch.stack([by_seed[int(s)] for s in seeds])  # (K, N)
        for start in range(0, n, bs):  # drop_last=False: the partial batch is a step too
            idx = perm[:, start:start + bs]
            ens.step(xt[idx], yt[idx], lr)
    return ens.evaluate(xt, yt, return_features)
