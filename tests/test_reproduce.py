"""scripts/reproduce.py: verdict rule, caching by config hash, atomic sections, the report."""
import importlib.util
import os
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A stand-in experiment: counts its runs in a file and writes the report contract, with the
# checks' outcomes, an optional failure and an optional schema break read from environment
# variables.
FAKE_EXPERIMENT = textwrap.dedent('''
    import argparse, json, os, sys, time
    import fake_helper
    from jaxnorm.papers import checks
    parser = argparse.ArgumentParser()
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--seeds', type=int)
    parser.add_argument('--data-dir')
    parser.add_argument('--out')
    parser.add_argument('--config')
    args = parser.parse_args()
    with open(os.environ['FAKE_RUN_LOG'], 'a') as log:
        log.write(f'{args.seeds}\\n')
    if args.config:
        with open(os.environ['FAKE_RUN_LOG'] + '.configs', 'a') as log:
            log.write(f'{args.config}\\n')
    out = os.path.join(args.out, 'fake')
    os.makedirs(out)
    open(os.path.join(out, 'curve.png'), 'wb').write(b'png')
    if os.environ.get('FAKE_FAIL'):
        sys.exit(3)
    holds = [h == '1' for h in os.environ['FAKE_HOLDS'].split(',')]
    declared = [checks.Check(f'c{i}', 'fake claim holds', 'claim', 'x', 'rule', args.seeds,
                             rule='|x| < 1') for i in range(len(holds))]
    checks.write_results(out, paper='Fake', claim='fake claim', ran='fake run',
                         scale='quick' if args.quick else 'paper', seeds=args.seeds,
                         table=['| a |', '|---|', '| 1.0 +- 0.1 |'],
                         checks=[c.evaluate_rule(h) for c, h in zip(declared, holds)],
                         figures=['curve.png'], started=time.perf_counter())
    if os.environ.get('FAKE_BREAK_SCHEMA'):
        path = os.path.join(out, 'results.json')
        results = json.load(open(path))
        del results['checks'][0]['outcome']
        json.dump(results, open(path, 'w'))
''')


def load_reproduce_script():
    spec = importlib.util.spec_from_file_location('reproduce', REPO / 'scripts' / 'reproduce.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules['reproduce'] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def reproduce(tmp_path, monkeypatch):
    module = load_reproduce_script()
    experiments = tmp_path / 'experiments'
    experiments.mkdir()
    (experiments / 'fake.py').write_text(FAKE_EXPERIMENT)
    (experiments / 'fake_helper.py').write_text('VALUE = 1\n')
    monkeypatch.setattr(module, 'EXPERIMENTS', str(experiments))
    monkeypatch.setattr(module, 'SECTIONS', (module.Section('fake', 'Fake paper (arXiv:0)'),))
    monkeypatch.setenv('FAKE_RUN_LOG', str(tmp_path / 'runs.txt'))
    monkeypatch.setenv('FAKE_HOLDS', '1,0')
    return module


@pytest.mark.parametrize('outcomes, expected', [
    ([('claim', 'supported'), ('claim', 'supported')], 'reproduced'),
    ([('claim', 'supported'), ('claim', 'refuted')], 'mixed'),
    ([('claim', 'refuted'), ('claim', 'inconclusive')], 'not reproduced'),
    ([('claim', 'supported'), ('claim', 'inconclusive')], 'inconclusive'),
    ([('claim', 'supported'), ('sanity', 'refuted')], 'invalid'),
    ([('sanity', 'supported')], 'inconclusive'),
    ([], 'inconclusive')])
def test_verdict_rule(reproduce, outcomes, expected):
    assert reproduce.verdict([{'kind': k, 'outcome': o} for k, o in outcomes]) == expected


def test_a_finished_section_is_cached_and_a_changed_config_reruns(reproduce, tmp_path):
    out = tmp_path / 'report'
    assert reproduce.main(['--quick', '--out', str(out)]) == 0
    assert reproduce.main(['--quick', '--out', str(out)]) == 0
    runs = (tmp_path / 'runs.txt').read_text().split()
    assert runs == ['3']  # the second invocation used the cache
    assert reproduce.main(['--quick', '--seeds', '4', '--out', str(out)]) == 0
    assert (tmp_path / 'runs.txt').read_text().split() == ['3', '4']

    report = (out / 'REPORT.md').read_text()
    assert ('| [Fake paper (arXiv:0)](#fake-paper-arxiv0) | quick | 4 | mixed (quick: not '
            'powered) | 1 supported, 1 refuted, 0 inconclusive of 2 claims; sanity 0 / 0 hold |'
            in report)
    assert '**Verdict: mixed (quick: not powered)** (1 supported, 1 refuted' in report
    assert '**Scale:** quick; **seeds:** 4.' in report
    assert 'Quick scale: not powered' in report
    # Pipes escaped inside table cells; kind, rule and outcome of every check shown.
    assert ('| c0 | claim | fake claim holds | x | rule: \\|x\\| < 1 | – | '
            '**supported** |' in report)
    assert '**refuted** |' in report
    assert (out / 'figures' / 'fake' / 'curve.png').read_bytes() == b'png'
    assert '![curve.png](figures/fake/curve.png)' in report


def test_without_quick_each_section_runs_its_config_file(reproduce, tmp_path, monkeypatch):
    configs, out = tmp_path / 'configs', tmp_path / 'report'
    configs.mkdir()
    monkeypatch.setattr(reproduce, 'CONFIGS', str(configs))
    with pytest.raises(SystemExit):  # no scripts/configs/fake.py: refused before running
        reproduce.main(['--out', str(out)])
    assert not (tmp_path / 'runs.txt').exists()
    config = configs / 'fake.py'
    config.write_text("def get_config():\n    return {'epochs': 1}\n")
    assert reproduce.main(['--out', str(out)]) == 0
    assert reproduce.main(['--out', str(out)]) == 0  # cached
    config.write_text("def get_config():\n    return {'epochs': 2}\n")
    assert reproduce.main(['--out', str(out)]) == 0  # the file's content is in the hash
    logged = (tmp_path / 'runs.txt.configs').read_text().split()
    assert logged == [str(config)] * 2
    assert (out / 'REPORT.md').read_text().startswith('# jaxnorm reproduction report\n\nFull scale')


def test_every_section_has_a_papers_scale_config():
    module = load_reproduce_script()
    assert [s.name for s in module.SECTIONS if not os.path.isfile(s.config())] == []


def test_a_failed_section_leaves_no_cache_entry_and_reports_its_log(reproduce, tmp_path,
                                                                    monkeypatch, capsys):
    out = tmp_path / 'report'
    monkeypatch.setenv('FAKE_FAIL', '1')
    assert reproduce.main(['--quick', '--out', str(out)]) == 1
    assert "section 'fake' failed (exit 3)" in capsys.readouterr().err
    assert not [name for name in os.listdir(out / 'cache') if not name.endswith('.partial')]
    monkeypatch.delenv('FAKE_FAIL')
    assert reproduce.main(['--quick', '--out', str(out)]) == 0
    assert (tmp_path / 'runs.txt').read_text().split() == ['3', '3']


def test_a_results_file_breaking_the_schema_is_refused_naming_the_field(reproduce, tmp_path,
                                                                        monkeypatch, capsys):
    monkeypatch.setenv('FAKE_BREAK_SCHEMA', '1')
    assert reproduce.main(['--quick', '--out', str(tmp_path / 'report')]) == 1
    assert "missing field 'outcome'" in capsys.readouterr().err
    assert not (tmp_path / 'report' / 'REPORT.md').exists()


@pytest.mark.parametrize('edited', ['fake.py', 'fake_helper.py'])
def test_changing_code_the_section_imports_invalidates_the_cache(reproduce, tmp_path, edited):
    out = tmp_path / 'report'
    reproduce.main(['--quick', '--out', str(out)])
    (Path(reproduce.EXPERIMENTS) / 'unrelated.py').write_text('# not imported\n')
    reproduce.main(['--quick', '--out', str(out)])
    assert len((tmp_path / 'runs.txt').read_text().split()) == 1
    source = Path(reproduce.EXPERIMENTS) / edited
    source.write_text(source.read_text() + '\n# edited\n')
    reproduce.main(['--quick', '--out', str(out)])
    assert len((tmp_path / 'runs.txt').read_text().split()) == 2


def test_a_section_hashes_the_repository_modules_it_imports():
    module = load_reproduce_script()
    lawn = module.Section('lawn', 'LAWN')
    sources = {os.path.relpath(path, REPO) for path in module.local_sources(lawn.script())}
    # Direct, package-level and sibling imports, followed transitively; nothing unrelated.
    assert {'scripts/experiments/lawn.py', 'scripts/experiments/lawn_report.py',
            'optim/lawn.py', 'jaxnorm/train.py', 'jaxnorm/_stats.py'} <= sources
    assert not {'jaxnorm/theory.py', 'prune/scores.py'} & sources


def test_bad_arguments_name_the_choices(reproduce, capsys):
    with pytest.raises(SystemExit):
        reproduce.main(['--only', 'nope'])
    assert "unknown section(s) ['nope']; choose from ['fake']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(['--quick', '--seeds', '2'])
    assert '--seeds must be >= 3' in capsys.readouterr().err


def test_every_registered_section_has_its_experiment_script():
    module = load_reproduce_script()
    for section in module.SECTIONS:
        assert os.path.exists(section.script()), section.name
