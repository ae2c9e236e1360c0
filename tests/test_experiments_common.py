"""jaxnorm.papers.common: the papers'-scale config handling and spreading runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm.papers import common


def write_config(tmp_path, body, name='paper.py'):
    path = tmp_path / name
    path.write_text(f'def get_config():\n    return {body}\n')
    return str(path)


def test_override_setting_replaces_only_the_given_keys():
    setting = {'dataset': 'digits', 'epochs': 2, 'lrs': (0.1,)}
    merged = common.override_setting(setting, {'dataset': 'cifar10'}, 'paper.py')
    assert merged == {'dataset': 'cifar10', 'epochs': 2, 'lrs': (0.1,)}
    assert setting['dataset'] == 'digits'  # the defaults are not mutated


def test_override_setting_names_the_valid_keys_for_a_typo():
    with pytest.raises(ValueError, match=r"paper.py: unknown setting\(s\) \['epoch'\]; valid: "
                                         r"\['dataset', 'epochs'\]"):
        common.override_setting({'dataset': 'digits', 'epochs': 2}, {'epoch': 3}, 'paper.py')


@pytest.mark.parametrize('argv, scale', [
    ([], 'standard'), (['--quick'], 'quick'), (['--scale', 'quick'], 'quick'),
    (['--scale', 'paper'], 'paper'), (['--config', 'FILE'], 'paper'),
    (['--config', 'FILE', '--scale', 'paper'], 'paper'),
    (['--quick', '--scale', 'quick'], 'quick')])
def test_the_scale_follows_scale_quick_and_config(argv, scale, tmp_path):
    argv = [str(tmp_path / 'paper.py') if a == 'FILE' else a for a in argv]
    write_config(tmp_path, '{}')
    args = common.parse_args('x', argv + ['--out', str(tmp_path / 'out')])
    assert (args.scale, args.quick) == (scale, scale == 'quick')


@pytest.mark.parametrize('argv, message', [
    (['--quick', '--config', 'FILE'], "--config sets the papers' scale; drop --quick"),
    (['--quick', '--scale', 'paper'], '--quick means --scale quick, not --scale paper'),
    (['--config', 'FILE', '--scale', 'standard'],
     '--config means --scale paper, not --scale standard')])
def test_contradicting_scale_flags_are_refused(argv, message, tmp_path, capsys):
    argv = [write_config(tmp_path, '{}') if a == 'FILE' else a for a in argv]
    with pytest.raises(SystemExit):
        common.parse_args('x', argv)
    assert message in capsys.readouterr().err


def test_load_setting_reads_a_config_file_or_asks_get_config(tmp_path):
    path = write_config(tmp_path, "{'epochs': 7}")
    seen = []

    def paper_setting(values, source):
        seen.append(source)
        return values

    def get_config(scale):
        return {'scale': scale}

    args = common.parse_args('x', ['--config', path])
    assert common.load_setting(args, get_config, paper_setting) == {'epochs': 7}
    assert seen == [path]
    args = common.parse_args('x', ['--scale', 'quick'])
    assert common.load_setting(args, get_config, paper_setting) == {'scale': 'quick'}
    with pytest.raises(ValueError, match=r"unknown scale 'big'; choose from \('quick', "
                                         r"'standard', 'paper'\)"):
        common.check_scale('big')


@pytest.mark.sharded
def test_spread_runs_gives_each_device_its_share_and_keeps_the_result():
    devices = jax.device_count()
    assert devices == 8  # tests/conftest.py simulates 8 CPU devices
    runs = {'w': jnp.arange(devices * 6, dtype=jnp.float32).reshape(devices, 2, 3),
            'odd': jnp.ones((3, 2)), 'scalar': jnp.float32(2.0)}
    spread = common.spread_runs(runs)
    assert {s.data.shape for s in spread['w'].addressable_shards} == {(1, 2, 3)}
    assert len({s.device for s in spread['w'].addressable_shards}) == devices
    # A leading axis that does not divide stays whole on its device, as do scalars.
    assert spread['odd'].sharding == runs['odd'].sharding
    assert spread['scalar'].sharding == runs['scalar'].sharding

    step = jax.jit(jax.vmap(lambda w, x: jnp.tanh(w @ w.T).sum() * x, (0, None)))
    np.testing.assert_allclose(np.asarray(step(spread['w'], spread['scalar'])),
                               np.asarray(step(runs['w'], runs['scalar'])), rtol=1e-6)
    assert len({s.device for s in step(spread['w'], spread['scalar']).addressable_shards}) == 8
