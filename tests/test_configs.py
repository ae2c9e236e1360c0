"""The paper-scale configs in scripts/configs/ and the ``--config`` handling of the scripts."""
import dataclasses
import glob
import importlib
import importlib.util
import os

import pytest

from jaxnorm import config as config_lib
from jaxnorm import models
from jaxnorm.cli import config_file_defaults
from jaxnorm.commands import continual as continual_command, prune as prune_command
from jaxnorm.layers import norm_names
from jaxnorm.pruning import PruneSettings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, 'scripts', 'configs', '*.py')))


def load_experiment(name):
    """The experiment module behind ``scripts/experiments/<name>.py``."""
    return importlib.import_module(f'jaxnorm.papers.{name}')


def value_of(setting, key):
    """``setting[key]`` of a dict or ConfigDict, or the attribute of a dataclass."""
    return getattr(setting, key) if dataclasses.is_dataclass(setting) else setting[key]


def script_of(path):
    spec = importlib.util.spec_from_file_location('_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SCRIPT


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_every_config_is_accepted_by_its_script(path):
    script = script_of(path)
    values = config_lib.read_config_file(path)
    if script == 'scripts/train.py':
        cfg = config_lib.load_config_file(path)  # validates every value
        assert cfg.model in models.model_names()
        assert cfg.norm in norm_names()
        assert all(cfg[k] == v for k, v in values.items() if not k.endswith('_kwargs'))
    elif script == 'scripts/prune_model.py':
        module = prune_command
        parser = module.build_parser()
        argv = ['--config', path]
        file_values = config_file_defaults(parser, argv, extra_keys=('model_kwargs',))
        settings = module.settings_from_args(parser.parse_args(argv), file_values)
        settings.check()
        assert settings == PruneSettings(**values)
    elif script == 'scripts/continual.py':
        module = continual_command
        parser = module.build_parser()
        config_file_defaults(parser, ['--config', path])
        args = parser.parse_args(['--config', path])
        assert all(getattr(args, k) == v for k, v in values.items())
    elif script.startswith('scripts/experiments/'):
        setting = load_experiment(os.path.splitext(os.path.basename(script))[0]).paper_setting(
            values, path)
        assert all(value_of(setting, k) == v for k, v in values.items())
    else:
        pytest.fail(f'{path}: SCRIPT {script!r} is not a script with --config')
    assert os.path.isfile(os.path.join(REPO, script))


def test_prune_flags_override_the_config_file(tmp_path):
    path = tmp_path / 'c.py'
    path.write_text("def get_config():\n    return {'model': 'vgg13', 'model_kwargs': "
                    "{'width': 0.5}, 'rounds': 7, 'target': 0.5}\n")
    module = prune_command
    parser = module.build_parser()
    argv = ['--config', str(path), '--rounds', '3', '--model-option', 'channels=None']
    file_values = config_file_defaults(parser, argv, extra_keys=('model_kwargs',))
    settings = module.settings_from_args(parser.parse_args(argv), file_values)
    assert (settings.model, settings.rounds, settings.target) == ('vgg13', 3, 0.5)
    assert settings.model_kwargs == {'width': 0.5, 'channels': None}


def test_unknown_config_key_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / 'c.py'
    path.write_text("def get_config():\n    return {'learning_rate': 0.1}\n")
    module = continual_command
    with pytest.raises(SystemExit) as exit_info:
        config_file_defaults(module.build_parser(), ['--config', str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'unknown setting(s) learning_rate' in err and 'lr' in err


def test_missing_config_file_is_reported(tmp_path, capsys):
    module = continual_command
    with pytest.raises(SystemExit):
        config_file_defaults(module.build_parser(), ['--config', str(tmp_path / 'no.py')])
    assert 'does not exist' in capsys.readouterr().err


def test_an_empty_afan_layer_turns_off_the_config_files_afan():
    from jaxnorm import afan
    path = os.path.join(REPO, 'scripts', 'configs', 'afan.py')
    cfg = config_lib.load_config_file(path)
    assert afan.from_run_config(cfg, models.get_model(cfg.model, num_classes=10),
                                (32, 32, 3)).layer == 'stage1_block9'
    assert afan.from_run_config(config_lib.apply_overrides(cfg, {'afan.layer': ''})) is None


SECTIONS = ('lawn', 'flow_pruning', 'beyond_bn', 'emr', 'unification', 'lottery', 'afan',
            'orthoreg', 'eman', 'mimicnorm')


@pytest.mark.parametrize('name', SECTIONS)
def test_each_experiment_holds_its_settings_at_every_scale(name):
    """One get_config(scale) per experiment; scripts/configs/<name>.py hands over its PAPER."""
    module = load_experiment(name)
    values = config_lib.read_config_file(os.path.join(REPO, 'scripts', 'configs', f'{name}.py'))
    assert values == module.PAPER
    setting = module.get_config('paper')
    if name == 'emr':  # continual.py's flags, resolved: the benchmark, the LR grid, epochs
        assert (setting['benchmarks'], setting['lrs'], setting['schedule']['epochs']) == (
            [values['benchmark']], tuple(values['lr']), values['epochs'])
    else:
        assert all(value_of(setting, k) == v for k, v in values.items()
                   if not k.endswith('_kwargs'))
    assert module.get_config('quick') != module.get_config('standard') != setting
    with pytest.raises(ValueError, match='epochz'):
        module.paper_setting({**values, 'epochz': 1}, 'typo.py')
    with pytest.raises(ValueError, match=r"unknown scale 'huge'; choose from \('quick'"):
        module.get_config('huge')
