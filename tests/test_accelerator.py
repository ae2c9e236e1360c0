"""What only a real accelerator can show: one train step equals CPU, and a short run trains.

Run these first on a GPU or TPU machine, with the lowering tests: ``pytest -m accelerator``.
On a CPU-only machine the tests here skip (the lowering tests still run).
"""
from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from jaxnorm import config, data, models, parallel, train

pytestmark = pytest.mark.accelerator

ACCELERATOR = jax.default_backend() != 'cpu'
needs_accelerator = pytest.mark.skipif(not ACCELERATOR,
                                       reason='no GPU or TPU (jax.default_backend() is cpu)')


def _one_step(device, norm: str):
    """A ResNet-20 SGD step on a fixed digits batch, every array on ``device``."""
    model = models.get_model('resnet20', norm=norm, num_classes=10)
    mesh = parallel.data_mesh([device])
    state = train.create_train_state(model, optax.sgd(0.1, momentum=0.9), (8, 8, 1), seed=0,
                                     mesh=mesh)
    ds = data.load('digits', 'train')
    mean, std = ds.channel_stats()
    batch = {'image': jax.device_put(((ds.images[:64] - mean) / std).astype(np.float32), device),
             'label': jax.device_put(ds.labels[:64], device)}
    step = jax.jit(train.train_step)
    for _ in range(3):
        state, metrics = step(state, batch)
    return jax.device_get((state.params, state.batch_stats, metrics))


@needs_accelerator
@pytest.mark.parametrize('norm', ['bn', 'gn', 'evonorm_s0', 'sws', 'mimic'])
def test_train_steps_on_the_accelerator_equal_cpu(norm):
    with jax.default_matmul_precision('highest'):
        on_cpu = _one_step(jax.devices('cpu')[0], norm)
        on_accelerator = _one_step(jax.devices()[0], norm)
    for got, want in zip(jax.tree.leaves(on_accelerator), jax.tree.leaves(on_cpu)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@needs_accelerator
def test_a_short_run_trains_on_the_accelerator(tmp_path):
    cfg = config.apply_overrides(config.default_config(), {
        'model': 'resnet20', 'norm': 'bn', 'dataset': 'digits', 'epochs': 3, 'batch_size': 64,
        'lr': 0.05, 'workdir': str(tmp_path / 'run'), 'progress': False})
    history = train.fit(cfg).history
    assert history[-1]['train_loss'] < 0.5 * history[0]['train_loss']
    assert history[-1]['test_accuracy'] > 0.8
