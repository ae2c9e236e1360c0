"""Short digits runs: every small model learns (loss falls, test accuracy >= 95 %)."""
import pytest

from jaxnorm import config as config_lib, train
from jaxnorm.layers import norm_names


@pytest.mark.parametrize('model, options, epochs', [
    ('mlp', {}, 8), ('resnet20', {}, 10), ('vgg_cfg10', {'width': 0.25}, 10)])
def test_small_models_learn_digits(tmp_path, model, options, epochs):
    cfg = config_lib.apply_overrides(config_lib.default_config(), {
        'model': model, 'model_kwargs': options, 'epochs': epochs, 'workdir': str(tmp_path / 'run'),
        'data_dir': str(tmp_path / 'tfds'), 'progress': False})
    history = train.fit(cfg).history
    assert history[-1]['train_loss'] < 0.5 * history[0]['train_loss']
    assert history[-1]['test_accuracy'] >= 0.95


# Weight-only normalizers and no normalization cannot keep a ResNet's activations bounded
# (Beyond BatchNorm, claim 1): they train only with SkipInit, and WeightNorm's centred ReLU
# after each residual sum also needs the pre-activation layout. They also learn more slowly.
WEIGHT_ONLY = {'wn': {'skipinit': True, 'preact': True}, 'sws': {'skipinit': True},
               'none': {'skipinit': True}}


@pytest.mark.parametrize('norm', norm_names())
def test_resnet20_learns_digits_with_every_norm(tmp_path, norm):
    cfg = config_lib.apply_overrides(config_lib.default_config(), {
        'model': 'resnet20', 'norm': norm, 'model_kwargs': WEIGHT_ONLY.get(norm, {}),
        'epochs': 5 if norm in WEIGHT_ONLY else 3, 'workdir': str(tmp_path / 'run'),
        'data_dir': str(tmp_path / 'tfds'), 'progress': False})
    history = train.fit(cfg).history
    assert history[-1]['train_loss'] < 0.5 * history[0]['train_loss']
    assert history[-1]['test_accuracy'] >= 0.8
