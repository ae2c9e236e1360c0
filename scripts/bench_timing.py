"""What the benchmarks share besides the timing itself: a jitted train step on random inputs,
the result table and the machine description.

Every benchmark compares variants measured side by side in one process, timed round-robin by
:func:`jaxnorm.timing.median_times` (so background load slows them alike and the ratios hold).
"""
from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any

import flax.linen as nn
import jax

from jaxnorm.losses import mean_cross_entropy


def make_train_step(model: nn.Module, batch_size: int, image_size: int):
    """A jitted SGD step (loss, gradients, parameter and batch_stats update) and its inputs."""
    x = jax.random.normal(jax.random.key(0), (batch_size, image_size, image_size, 3))
    labels = jax.random.randint(jax.random.key(1), (batch_size,), 0, 10)
    variables = model.init(jax.random.key(2), x)
    params, batch_stats = variables['params'], variables.get('batch_stats', {})

    def loss_fn(params, batch_stats):
        logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                      train=True, mutable=['batch_stats'])
        loss = mean_cross_entropy(logits, labels)
        return loss, updates.get('batch_stats', {})

    @jax.jit
    def step(params, batch_stats):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats)
        params = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
        return params, batch_stats, loss

    return step, (params, batch_stats)


@dataclasses.dataclass
class Result:
    """One benchmark's outcome: a markdown table plus the raw numbers for ``--json``.

    Attributes:
      title: what was compared.
      setup: model, batch, input size, repeats (one line).
      columns: table header.
      rows: table rows (already formatted cells).
      notes: lines printed under the table (what the ratios mean, goals).
      data: the unformatted numbers.
    """
    title: str
    setup: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = dataclasses.field(default_factory=list)
    data: Any = None

    def markdown(self) -> str:
        lines = [f'### {self.title}', '', self.setup, '',
                 '| ' + ' | '.join(self.columns) + ' |',
                 '|' + '---|' * len(self.columns)]
        lines += ['| ' + ' | '.join(row) + ' |' for row in self.rows]
        return '\n'.join(lines + [''] + self.notes)


def machine() -> dict:
    """Where the numbers were measured: CPU, core count, JAX backend and versions."""
    import jaxlib
    return {'cpu': _cpu_name(), 'cores': os.cpu_count(),
            'device': f'{jax.devices()[0].device_kind} x{jax.device_count()}',
            'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
            'python': platform.python_version()}


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
