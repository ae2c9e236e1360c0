"""jaxnorm.cost against closed forms, and ``bench.py cost``'s arithmetic on one paper row."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import cost

S = jax.ShapeDtypeStruct
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_matmul_and_conv_flops_and_buffers_match_closed_forms():
    m, k, n = 8, 16, 4
    c = cost.step_cost(lambda x, w: x @ w, S((m, k), jnp.float32), S((k, n), jnp.float32))
    assert c.flops == 2 * m * k * n
    assert c.argument_bytes == 4 * (m * k + k * n) and c.output_bytes == 4 * m * n

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), 'VALID',
                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    batch, side, cin, cout, kernel = 2, 10, 3, 5, 3
    c = cost.step_cost(conv, S((batch, side, side, cin), jnp.float32),
                       S((kernel, kernel, cin, cout), jnp.float32))
    out = side - kernel + 1
    assert c.flops == 2 * batch * out * out * cout * kernel * kernel * cin


@pytest.mark.parametrize('length', [1, 4])
def test_scan_bodies_count_once_per_iteration_nested_and_under_grad(length):
    side, inner = 32, 3
    matmul = 2 * side ** 3

    def f(x, w):
        def outer_body(c, _):
            return jax.lax.scan(lambda d, _: (d @ w, None), c, None, length=inner)[0], None
        return jax.lax.scan(outer_body, x, None, length=length)[0].sum()
    args = S((side, side), jnp.float32), S((side, side), jnp.float32)
    matmuls = length * inner
    assert cost.step_cost(f, *args).flops == pytest.approx(matmuls * matmul, rel=0.01)
    # Reverse mode: the forward matmuls, then two per iteration (cotangents of c and w).
    assert cost.step_cost(jax.grad(f, argnums=1), *args).flops == pytest.approx(
        3 * matmuls * matmul, rel=0.01)


def test_a_while_loop_of_unknown_length_is_reported_as_counted_once():
    c = cost.step_cost(lambda x: jax.lax.fori_loop(0, x.sum().astype(int), lambda i, v: v * 2, x),
                       S((4,), jnp.float32))
    assert c.uncounted_loops == 1


def test_costs_add_and_scale_and_tree_bytes_count_every_leaf():
    a = cost.StepCost(10.0, 1.0, 100.0, 8, 4, 64)
    b = cost.StepCost(5.0, 2.0, 50.0, 8, 4, 32, 1)
    assert a + b == cost.StepCost(15.0, 3.0, 150.0, 16, 8, 96, 1)
    assert a.scaled(3) == cost.StepCost(30.0, 3.0, 300.0, 8, 4, 64)
    tree = {'w': np.zeros((3, 4), np.float32), 'b': S((5,), jnp.bfloat16), 'step': 7}
    assert cost.tree_bytes(tree) == 3 * 4 * 4 + 5 * 2


def test_run_seconds_is_flops_over_utilized_peak_and_refuses_bad_settings():
    h100 = cost.H100_SXM
    assert cost.run_seconds(1e15, h100, utilization=0.5) == pytest.approx(
        1e15 / (0.5 * h100.peak['tf32']))
    assert cost.run_seconds(1e15, h100, precision='bf16') == pytest.approx(
        cost.run_seconds(1e15, h100) / 2, rel=1e-3)
    with pytest.raises(ValueError, match='fp8'):
        cost.run_seconds(1.0, h100, precision='fp8')
    with pytest.raises(ValueError, match='utilization'):
        cost.run_seconds(1.0, h100, utilization=1.5)


def test_bench_cost_row_multiplies_the_step_by_the_configs_step_count(tmp_path):
    out = tmp_path / 'cost.json'
    subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'bench.py'), 'cost',
                    '--papers', 'weight unification', '--json', str(out)], check=True,
                   capture_output=True, text=True, timeout=600)
    (row,) = json.loads(out.read_text())['result']['data']
    config = {}
    exec(open(os.path.join(REPO, 'scripts', 'configs', 'unification.py')).read(), config)
    settings = config['get_config']()
    # Per seed: pretraining, then one cell per (block shape, ratio), 3 x 4, each with four arms
    # (ADMM, one-shot, two prune-only baselines) of admm + retrain epochs.
    epochs = settings['pretrain_epochs'] + 3 * len(settings['ratios']) * 4 * (
        settings['admm_epochs'] + settings['retrain_epochs'])
    assert row['steps'] == 3 * epochs * (50_000 // settings['batch_size'])
    (part,) = row['parts']
    assert row['total_flops'] == pytest.approx(part['flops'] * row['steps'])
    assert row['hours'] == pytest.approx(row['total_flops'] / (0.4 * 494.7e12) / 3600)
