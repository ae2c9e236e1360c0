"""jaxnorm.papers.reproduce: verdict rule, caching by a hash of the code and settings, atomic
sections, the report."""
import hashlib
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from jaxnorm.papers import report_cache, report_markdown, reproduce as reproduce_module

REPO = Path(__file__).resolve().parents[1]

# A stand-in experiment, the module ``fakepapers.fake`` of a temporary checkout: counts its runs
# in a file and writes the report contract, with the checks' outcomes, an optional failure and
# an optional schema break read from environment variables.
FAKE_EXPERIMENT = textwrap.dedent('''
    import argparse, json, os, sys, time
    from fakepapers import helper
    from jaxnorm.papers import checks
    parser = argparse.ArgumentParser()
    parser.add_argument('--scale')
    parser.add_argument('--seeds', type=int)
    parser.add_argument('--data-dir')
    parser.add_argument('--out')
    args = parser.parse_args()
    with open(os.environ['FAKE_RUN_LOG'], 'a') as log:
        log.write(f'{args.seeds}\\n')
    with open(os.environ['FAKE_RUN_LOG'] + '.scales', 'a') as log:
        log.write(f'{args.scale}\\n')
    out = os.path.join(args.out, 'fake')
    os.makedirs(out)
    open(os.path.join(out, 'curve.png'), 'wb').write(b'png')
    if os.environ.get('FAKE_FAIL'):
        sys.exit(3)
    holds = [h == '1' for h in os.environ['FAKE_HOLDS'].split(',')]
    declared = [checks.Check(f'c{i}', 'fake claim holds', 'claim', 'x', 'rule', args.seeds,
                             rule='|x| < 1') for i in range(len(holds))]
    checks.write_results(out, paper='Fake', claim='fake claim', ran='fake run',
                         scale=args.scale, seeds=args.seeds,
                         table=['| a |', '|---|', '| 1.0 +- 0.1 |'],
                         checks=[c.evaluate_rule(h) for c, h in zip(declared, holds)],
                         figures=['curve.png'], started=time.perf_counter())
    if os.environ.get('FAKE_BREAK_SCHEMA'):
        path = os.path.join(out, 'results.json')
        results = json.load(open(path))
        del results['checks'][0]['outcome']
        json.dump(results, open(path, 'w'))
''')
# The experiment imports ``helper``, which imports ``constants`` only inside a function: the
# section depends on ``constants`` indirectly and lazily, and not at all on ``unrelated``.
FAKE_MODULES = {
    '__init__.py': '',
    'fake.py': FAKE_EXPERIMENT,
    'helper.py': 'def value():\n    from fakepapers import constants\n    return constants.VALUE\n',
    'constants.py': 'VALUE = 1\n',
    'unrelated.py': 'VALUE = 2\n',
}


@pytest.fixture
def reproduce(tmp_path, monkeypatch):
    """The report with one section, ``fake``, run from the package ``fakepapers`` of a
    temporary checkout (found, hashed and run there)."""
    package = tmp_path / 'checkout' / 'fakepapers'
    package.mkdir(parents=True)
    for name, source in FAKE_MODULES.items():
        (package / name).write_text(source)
    monkeypatch.setattr(reproduce_module, 'REPO', str(package.parent))
    monkeypatch.setattr(reproduce_module, 'PACKAGE', 'fakepapers')
    monkeypatch.setattr(reproduce_module, 'SECTIONS',
                        (reproduce_module.Section('fake', 'Fake paper (arXiv:0)'),))
    monkeypatch.setenv('FAKE_RUN_LOG', str(tmp_path / 'runs.txt'))
    monkeypatch.setenv('FAKE_HOLDS', '1,0')
    return reproduce_module


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
    (out / 'figures' / 'fake' / 'no_longer_drawn.png').write_bytes(b'old')
    assert reproduce.main(['--quick', '--out', str(out)]) == 0
    assert not (out / 'figures' / 'fake' / 'no_longer_drawn.png').exists()
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


def test_without_quick_each_section_runs_at_the_papers_scale(reproduce, tmp_path):
    out = tmp_path / 'report'
    assert reproduce.main(['--out', str(out)]) == 0
    assert reproduce.main(['--out', str(out)]) == 0  # cached
    assert reproduce.main(['--quick', '--out', str(out)]) == 0  # another scale: another entry
    assert (tmp_path / 'runs.txt.scales').read_text().split() == ['paper', 'quick']
    assert (out / 'REPORT.md').read_text().startswith(
        '# jaxnorm reproduction report\n\nQuick (CPU) scale')


def test_a_section_named_in_standard_runs_at_that_scale_with_its_seeds(reproduce, tmp_path):
    out = tmp_path / 'report'
    assert reproduce.main(['--quick', '--standard', 'fake:5', '--out', str(out)]) == 0
    assert (tmp_path / 'runs.txt.scales').read_text().split() == ['standard']
    assert (tmp_path / 'runs.txt').read_text().split() == ['5']
    report = (out / 'REPORT.md').read_text()
    assert report.startswith('# jaxnorm reproduction report\n\nStandard (CPU, sized from a '
                             'pilot) scale')
    assert 'Quick scale: not powered' not in report  # no section ran at the quick scale
    assert '**Verdict: mixed** (1 supported' in report
    assert '**Scale:** standard; **seeds:** 5.' in report
    assert reproduce.main(['--quick', '--standard', 'fake', '--seeds', '4',
                           '--out', str(out)]) == 0  # a bare name takes --seeds
    assert (tmp_path / 'runs.txt').read_text().split() == ['5', '4']


def test_the_header_names_each_scale_with_its_sections(reproduce):
    rows = [report_markdown.Row(reproduce.Section(name, name), {'scale': scale}, '', 0.0, True)
            for name, scale in [('a', 'quick'), ('b', 'standard'), ('c', 'quick')]]
    assert report_markdown.scales_line(rows) == ('Scales: quick (CPU): a, c; standard (CPU, '
                                                 'sized from a pilot): b')
    assert report_markdown.scales_line(rows[1:2]) == 'Standard (CPU, sized from a pilot) scale'


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


def test_the_cache_key_follows_indirect_and_lazy_imports_and_nothing_else(reproduce):
    section, arguments = reproduce.SECTIONS[0], ['--quick', '--seeds', '3']
    package = Path(reproduce.REPO) / 'fakepapers'
    sources = {os.path.relpath(path, package) for path in reproduce.section_sources(
        section.module)}
    assert sources == {'__init__.py', 'fake.py', 'helper.py', 'constants.py'}
    key = reproduce.cache_key(section, arguments)
    assert key.startswith('fake-') and key == reproduce.cache_key(section, arguments)
    (package / 'unrelated.py').write_text('VALUE = 3\n')
    assert reproduce.cache_key(section, arguments) == key
    # constants.py is imported only inside helper.value(), which the section never calls here.
    (package / 'constants.py').write_text('VALUE = 4\n')
    assert reproduce.cache_key(section, arguments) != key


@pytest.mark.parametrize('edited', ['fake.py', 'constants.py'])
def test_changing_code_the_section_imports_reruns_it(reproduce, tmp_path, edited):
    out, package = tmp_path / 'report', Path(reproduce.REPO) / 'fakepapers'
    reproduce.main(['--quick', '--out', str(out)])
    (package / 'unrelated.py').write_text('# edited, never imported\n')
    reproduce.main(['--quick', '--out', str(out)])
    assert len((tmp_path / 'runs.txt').read_text().split()) == 1
    source = package / edited
    source.write_text(source.read_text() + '\n# edited\n')
    reproduce.main(['--quick', '--out', str(out)])
    assert len((tmp_path / 'runs.txt').read_text().split()) == 2


@pytest.mark.parametrize('section, imported', [
    ('lawn', {'jaxnorm/papers/lawn.py', 'jaxnorm/papers/lawn_report.py',
              'jaxnorm/papers/common.py', 'optim/lawn.py', 'jaxnorm/train.py'}),
    # Modules that once lived in scripts/ and escaped the hash.
    ('mimicnorm', {'jaxnorm/papers/mimicnorm.py', 'jaxnorm/timing.py'}),
    ('emr', {'jaxnorm/papers/emr.py', 'jaxnorm/commands/continual.py', 'jaxnorm/continual.py'}),
    # The registry imports every built-in extension by name at fit time.
    ('orthoreg', {'jaxnorm/orthoreg.py', 'optim/orthoreg.py', 'jaxnorm/sparsity.py'}),
    ('beyond_bn', {'jaxnorm/lawn.py', 'jaxnorm/eman.py', 'jaxnorm/unification.py'}),
])
def test_a_section_hashes_the_repository_modules_it_imports(section, imported):
    sources = {os.path.relpath(path, REPO) for path in reproduce_module.section_sources(
        f'jaxnorm.papers.{section}')}
    assert imported <= sources
    assert all(not path.startswith(('scripts/', 'tests/')) for path in sources)
    assert 'jaxnorm/papers/reproduce.py' not in sources


def test_a_finished_section_records_its_arguments_and_the_digest_of_every_source(reproduce,
                                                                                  tmp_path):
    out, package = tmp_path / 'report', Path(reproduce.REPO) / 'fakepapers'
    reproduce.main(['--quick', '--out', str(out)])
    (entry,) = (out / 'cache').iterdir()
    manifest = json.loads((entry / 'sources.json').read_text())
    assert manifest['arguments'] == ['--scale', 'quick', '--seeds', '3']
    assert manifest['sources'] == {
        f'fakepapers/{name}': hashlib.sha256((package / name).read_bytes()).hexdigest()
        for name in ['__init__.py', 'fake.py', 'helper.py', 'constants.py']}


def test_reuse_keeps_a_changed_section_and_names_what_changed(reproduce, tmp_path, capsys):
    out, package = tmp_path / 'report', Path(reproduce.REPO) / 'fakepapers'
    reproduce.main(['--quick', '--out', str(out)])
    (package / 'constants.py').write_text('VALUE = 5\n')
    (package / 'helper.py').write_text('def value():\n    return 5\n')  # constants now gone
    assert reproduce.main(['--quick', '--reuse', 'fake', '--out', str(out)]) == 0
    assert len((tmp_path / 'runs.txt').read_text().split()) == 1
    report = (out / 'REPORT.md').read_text()
    assert 'Reused sections.' in report and ' s, reused |' in report
    assert ('Source files it imports that changed since (2): `fakepapers/constants.py (gone)`, '
            '`fakepapers/helper.py`.') in report
    assert 'fake: mixed (quick: not powered) (reused)' in capsys.readouterr().out
    # Other arguments are another run: nothing to reuse, so it runs; without --reuse too.
    reproduce.main(['--quick', '--seeds', '4', '--reuse', 'fake', '--out', str(out)])
    assert 'no finished run of fake with these arguments' in capsys.readouterr().err
    reproduce.main(['--quick', '--out', str(out)])
    assert (tmp_path / 'runs.txt').read_text().split() == ['3', '4', '3']
    # The rerun is an exact hit now: kept, not marked reused.
    reproduce.main(['--quick', '--reuse', 'fake', '--out', str(out)])
    assert 'Reused' not in (out / 'REPORT.md').read_text()
    assert len((tmp_path / 'runs.txt').read_text().split()) == 3


def test_reuse_finds_the_committed_record_when_the_cache_is_gone(reproduce, tmp_path):
    out, package = tmp_path / 'report', Path(reproduce.REPO) / 'fakepapers'
    reproduce.main(['--quick', '--out', str(out)])
    (entry,) = (out / 'cache').iterdir()
    record = out / 'records' / 'fake'
    assert sorted(p.name for p in (record / 'fake').iterdir()) == ['curve.png', 'results.json']
    assert (record / 'sources.json').read_bytes() == (entry / 'sources.json').read_bytes()
    assert not (record / 'log.txt').exists()  # the record keeps no log or checkpoints
    shutil.rmtree(out / 'cache')
    shutil.rmtree(out / 'figures')
    (package / 'constants.py').write_text('VALUE = 7\n')
    assert reproduce.main(['--quick', '--reuse', 'fake', '--out', str(out)]) == 0
    assert len((tmp_path / 'runs.txt').read_text().split()) == 1
    assert 'changed since (1): `fakepapers/constants.py`' in (out / 'REPORT.md').read_text()
    assert (out / 'figures' / 'fake' / 'curve.png').read_bytes() == b'png'
    assert (record / 'fake' / 'results.json').exists()


def test_reuse_skips_entries_without_a_manifest(reproduce, tmp_path):
    out, package = tmp_path / 'report', Path(reproduce.REPO) / 'fakepapers'
    reproduce.main(['--quick', '--out', str(out)])
    (entry,) = (out / 'cache').iterdir()
    (entry / 'sources.json').unlink()
    (out / 'records' / 'fake' / 'sources.json').unlink()
    (package / 'constants.py').write_text('VALUE = 6\n')
    reproduce.main(['--quick', '--reuse', 'fake', '--out', str(out)])
    assert len((tmp_path / 'runs.txt').read_text().split()) == 2


def test_changed_sources_marks_edited_new_and_gone_files():
    before = {'a.py': '1', 'b.py': '2', 'c.py': '3'}
    now = {'a.py': '1', 'b.py': '9', 'd.py': '4'}
    assert report_cache.changed_sources(before, now) == ['b.py', 'c.py (gone)', 'd.py (new)']


def test_bad_arguments_name_the_choices(reproduce, capsys):
    with pytest.raises(SystemExit):
        reproduce.main(['--only', 'nope'])
    assert "--only: unknown section(s) ['nope']; choose from ['fake']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(['--quick', '--reuse', 'fake,lawn'])
    assert "--reuse: unknown section(s) ['lawn']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(['--quick', '--seeds', '2'])
    assert '--seeds must be >= 3' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(['--quick', '--standard', 'fake:2'])
    assert "--standard: 'fake:2' needs a seed count >= 3, as in fake:8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(['--quick', '--standard', 'lawn'])
    assert "--standard: unknown section 'lawn'; choose from ['fake']" in capsys.readouterr().err


def test_every_section_has_its_experiment_module_and_command_line():
    for section in reproduce_module.SECTIONS:
        path = REPO / Path(*section.module.split('.')).with_suffix('.py')
        assert path.is_file(), section.name
        assert (REPO / 'scripts' / 'experiments' / f'{section.name}.py').is_file(), section.name
