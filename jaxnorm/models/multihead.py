"""Multi-head networks for task-incremental continual learning (EMR, arXiv:2102.02805).

One trunk and one linear head per task. The parameters hold every head (one ``head`` Dense
of ``num_tasks * num_classes`` outputs, as the EMR authors' code), and the module returns the
logits ``(batch, num_classes)`` of head ``task`` only, so a task's run through
:func:`jaxnorm.train.fit` is an ordinary classifier run (``model_kwargs={'task': t}``) whose
parameters carry over unchanged to the next task's run.

* :class:`MultiHeadMLP` (``multihead_mlp``): flatten, Dense + norm + activation per hidden
  size, the heads.
* :class:`MultiHeadCNN` (``multihead_cnn``): the reference's "vanilla" CNN, 3x3 convs
  64-64-M-128-128-M-256-256-M (M: 2x2 max pool), the heads.

Layers keep flax's default initialization (LeCun normal, zero bias), as the reference's
PyTorch-default-like layers; with ``norm='none'`` the slots are plain ReLUs, which is the
reference network.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn

from jaxnorm.layers import NormSpec
from jaxnorm.models.common import check_floating_input, resolve_norm


def _task_logits(module: nn.Module, features):
    logits = nn.Dense(module.num_tasks * module.num_classes, name='head')(features)
    return logits.reshape(features.shape[0], module.num_tasks, module.num_classes)[:, module.task]


def _check_task(module: nn.Module) -> None:
    if not 0 <= module.task < module.num_tasks:
        raise ValueError(f'{module.model_name}: task {module.task} is not in [0, '
                         f'{module.num_tasks}); choose the head of one of the num_tasks tasks')


class MultiHeadMLP(nn.Module):
    """MLP trunk and one head per task; returns head ``task``'s logits.

    Attributes:
      num_classes: classes of each task (outputs of one head).
      num_tasks: number of heads.
      task: the head whose logits the module returns.
      hidden: hidden layer sizes.
      norm: registry name or :class:`~jaxnorm.layers.NormSpec` (``dense_norm`` and ``act``
        slots after every hidden layer).
      norm_kwargs: options of the registry entry.
      model_name: name used in error messages.
    """

    num_classes: int
    num_tasks: int = 5
    task: int = 0
    hidden: Sequence[int] = (128, 128)
    norm: str | NormSpec = 'none'
    norm_kwargs: Mapping[str, Any] | None = None
    model_name: str = 'multihead_mlp'

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        check_floating_input(x, self.model_name)
        _check_task(self)
        spec = resolve_norm(self.norm, self.norm_kwargs)
        x = x.reshape(x.shape[0], -1)
        for index, width in enumerate(self.hidden, start=1):
            x = nn.Dense(width, name=f'dense{index}')(x)
            x = spec.dense_norm(name=f'norm{index}')(x, train=train)
            x = spec.act(name=f'act{index}')(x, train=train)
        return _task_logits(self, x)


class MultiHeadCNN(nn.Module):
    """Conv trunk (3x3 ``'SAME'`` convs, a 2x2 max pool after every second) and one head per
    task; returns head ``task``'s logits. Attributes as :class:`MultiHeadMLP`, with
    ``channels`` the convs' output channels."""

    num_classes: int
    num_tasks: int = 20
    task: int = 0
    channels: Sequence[int] = (64, 64, 128, 128, 256, 256)
    norm: str | NormSpec = 'none'
    norm_kwargs: Mapping[str, Any] | None = None
    model_name: str = 'multihead_cnn'

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        check_floating_input(x, self.model_name)
        _check_task(self)
        spec = resolve_norm(self.norm, self.norm_kwargs)
        for index, width in enumerate(self.channels, start=1):
            x = nn.Conv(width, (3, 3), padding=1, name=f'conv{index}')(x)
            x = spec.norm(name=f'norm{index}')(x, train=train)
            x = spec.act(name=f'act{index}')(x, train=train)
            if index % 2 == 0:
                x = nn.max_pool(x, (2, 2), (2, 2))
        return _task_logits(self, x.reshape(x.shape[0], -1))

