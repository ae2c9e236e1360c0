"""PyTorch twins of jaxnorm's ResNet-20 with each of the 11 normalizers, for ``bench.py torch``.

Bench-only: PyTorch is an optional dependency of this file alone (never in requirements.txt);
on the CPU, ``pip install torch==2.13.0``. Each twin has the architecture of
``get_model('resnet20', norm=NAME)`` with the registry's default options: the stem and the
post-activation basic blocks with option-A shortcuts, the norm and activation slots filled as
:func:`jaxnorm.layers.get_norm` fills them (EvoNorms in the activation slot, FRN followed by a
TLU, weight-reparameterized convs with biases and no norm), global average pooling and a
Dense head. :func:`parameter_count` lets the bench check that both sides have the same
parameters. The numerics follow :mod:`jaxnorm.functional`; only speed is compared.
"""
from __future__ import annotations

import math
import os

import jax
import torch
from torch import nn
from torch.nn import functional as F

from bench_timing import make_train_step
from jaxnorm.models import get_model
from jaxnorm.timing import median_times, threaded

EPSILON = 1e-5
RELU_GAIN = math.sqrt(2 * math.pi / (math.pi - 1))


def default_groups(channels: int) -> int:
    """jaxnorm's default grouping for GN and EvoNorm-S0: G = min(32, C)."""
    return min(32, channels)


class Affine(nn.Module):
    """Per-channel ``gamma * x + beta`` on NCHW input."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return x * self.weight + self.bias


class RunningVarianceAffine(Affine):
    """An affine norm keeping a running batch variance (flax momentum 0.9, as jaxnorm)."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.register_buffer('running_var', torch.ones(1, channels, 1, 1))

    def batch_variance(self, x):
        """The biased per-channel batch variance in training (updating the running one);
        the running variance in eval mode."""
        if not self.training:
            return self.running_var
        var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
        with torch.no_grad():
            self.running_var.mul_(0.9).add_(0.1 * var)
        return var


class VarianceNorm(RunningVarianceAffine):
    """``gamma * x / sqrt(sigma_B^2 + eps) + beta`` with a running variance."""

    def forward(self, x):
        return super().forward(x * torch.rsqrt(self.batch_variance(x) + EPSILON))


class FilterResponseNorm(Affine):
    """``gamma * x / sqrt(mean_HW(x^2) + 1e-6 + |eps|) + beta`` with a learned eps."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.learned_epsilon = nn.Parameter(torch.full((), 1e-5))

    def forward(self, x):
        nu2 = x.square().mean(dim=(2, 3), keepdim=True)
        return super().forward(x * torch.rsqrt(nu2 + 1e-6 + self.learned_epsilon.abs()))


class TLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.tau = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return torch.maximum(x, self.tau)


class EvoNormB0(RunningVarianceAffine):
    """``x / max(sqrt(sigma_B^2 + eps), v x + sqrt(sigma_I^2 + eps)) * gamma + beta``."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.v = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        batch_var = self.batch_variance(x)
        instance_var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
        denominator = torch.maximum(torch.sqrt(batch_var + EPSILON),
                                    self.v * x + torch.sqrt(instance_var + EPSILON))
        return super().forward(x / denominator)


class EvoNormS0(Affine):
    """``x sigmoid(v x) / sqrt(sigma_g^2 + eps) * gamma + beta``, group variance per sample."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.v = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.groups = default_groups(channels)

    def forward(self, x):
        n, c, h, w = x.shape
        grouped = x.reshape(n, self.groups, c // self.groups, h, w)
        var = grouped.var(dim=(2, 3, 4), keepdim=True, unbiased=False)
        std = torch.sqrt(var + EPSILON).expand_as(grouped).reshape(n, c, h, w)
        return super().forward(x * torch.sigmoid(self.v * x) / std)


class CenteredReLU(nn.Module):
    """ReLU shifted and scaled to mean 0, variance 1 on N(0, 1) inputs."""

    def forward(self, x):
        return RELU_GAIN * (F.relu(x) - 1 / math.sqrt(2 * math.pi))


class WeightNormConv(nn.Conv2d):
    """``w_o = g_o v_o / ||v_o||`` per output filter; g starts at ||v_o||."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = nn.Parameter(self.weight.detach().flatten(1).norm(dim=1))

    def forward(self, x):
        squared = self.weight.square().flatten(1).sum(dim=1)
        weight = self.weight * (self.scale * torch.rsqrt(squared + 1e-12)).view(-1, 1, 1, 1)
        return self._conv_forward(x, weight, self.bias)


class ScaledWSConv(nn.Conv2d):
    """``w_o = gamma g_o (v_o - mean v_o) / (std v_o sqrt(fan_in))``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels))

    def forward(self, x):
        fan_in = self.weight[0].numel()
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        multiplier = (RELU_GAIN / math.sqrt(fan_in)) * self.gain.view(-1, 1, 1, 1)
        weight = (self.weight - mean) * torch.rsqrt(var + EPSILON) * multiplier
        return self._conv_forward(x, weight, self.bias)


def norm_family(name: str):
    """(conv class, conv bias, norm factory, activation factory) as ``get_norm(name)``."""
    identity = lambda c: nn.Identity()  # noqa: E731
    relu = lambda c: nn.ReLU()  # noqa: E731
    families = {
        'bn': (nn.Conv2d, False, lambda c: nn.BatchNorm2d(c, eps=EPSILON, momentum=0.1), relu),
        'ln': (nn.Conv2d, False, lambda c: nn.GroupNorm(1, c, eps=EPSILON), relu),
        'in': (nn.Conv2d, False, lambda c: nn.InstanceNorm2d(c, eps=EPSILON, affine=True), relu),
        'gn': (nn.Conv2d, False, lambda c: nn.GroupNorm(default_groups(c), c, eps=EPSILON),
               relu),
        'frn': (nn.Conv2d, False, FilterResponseNorm, TLU),
        'vn': (nn.Conv2d, False, VarianceNorm, relu),
        'evonorm_b0': (nn.Conv2d, False, identity, EvoNormB0),
        'evonorm_s0': (nn.Conv2d, False, identity, EvoNormS0),
        'wn': (WeightNormConv, True, identity, lambda c: CenteredReLU()),
        'sws': (ScaledWSConv, True, identity, relu),
        'none': (nn.Conv2d, True, identity, relu),
    }
    if name not in families:
        raise ValueError(f'no PyTorch twin for norm {name!r}; available: {", ".join(families)}')
    return families[name]


NORMS = ('bn', 'ln', 'in', 'gn', 'frn', 'vn', 'evonorm_b0', 'evonorm_s0', 'wn', 'sws', 'none')


class BasicBlock(nn.Module):
    def __init__(self, family, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        conv, bias, norm, act = family
        self.conv1 = conv(in_channels, out_channels, 3, stride, 1, bias=bias)
        self.norm1, self.act1 = norm(out_channels), act(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, 1, 1, bias=bias)
        self.norm2, self.act2 = norm(out_channels), act(out_channels)
        self.stride, self.pad = stride, out_channels - in_channels

    def forward(self, x):
        branch = self.act1(self.norm1(self.conv1(x)))
        branch = self.norm2(self.conv2(branch))
        shortcut = x[:, :, ::self.stride, ::self.stride]
        if self.pad:  # option A: zero channels appended
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.pad))
        return self.act2(branch + shortcut)


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20 (16/32/64, 3x3 blocks, option-A shortcuts)."""

    def __init__(self, norm: str, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        family = norm_family(norm)
        conv, bias, norm_factory, act = family
        self.stem = nn.Sequential(conv(in_channels, 16, 3, 1, 1, bias=bias), norm_factory(16),
                                  act(16))
        blocks, channels = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(3):
                blocks.append(BasicBlock(family, channels, width, stride if index == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_step(norm: str, batch_size: int, image_size: int, lr: float = 0.01):
    """(zero-argument SGD train step on fixed random NCHW data, the model's parameter count)."""
    torch.manual_seed(0)
    model = ResNet20(norm).train()
    x = torch.randn(batch_size, 3, image_size, image_size)
    labels = torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        return loss.item()  # synchronises, as block_until_ready does on the JAX side
    return step, parameter_count(model)


def compare(norms, image_sizes, batch_size: int, repeats: int, warmup: int) -> list[dict]:
    """Median train-step ms of jaxnorm's ResNet-20 and its PyTorch twin, per norm and size.

    Both sides run on the same threads (torch's intra-op pool is set to the CPU count, which
    XLA's CPU backend also uses), timed round-robin in one process.
    """
    torch.set_num_threads(os.cpu_count())
    rows = []
    for size in image_sizes:
        for norm in norms:
            model = get_model('resnet20', norm=norm, num_classes=10)
            jax_step, state = make_train_step(model, batch_size, size)
            torch_step, torch_params = train_step(norm, batch_size, size)
            jax_params = sum(p.size for p in jax.tree.leaves(state[0]))
            ms = median_times({'jax': threaded(jax_step, state), 'torch': torch_step},
                              repeats, warmup)
            rows.append({'norm': norm, 'image_size': size, 'jaxnorm_ms': ms['jax'],
                         'torch_ms': ms['torch'], 'speed_vs_torch': ms['torch'] / ms['jax'],
                         'same_parameter_count': jax_params == torch_params})
    return rows
