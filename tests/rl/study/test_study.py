"""Studies: study files and their grids, the sweep's flags and its
backends, the status table, and a tiny study run end to end (with its
report)."""

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import helpers
import tiny
from helpers import REPO, assert_png
from rigl.rl import sweep
from rigl.rl.layout import FINAL_METRIC_FILE, SWEEP_COMMAND_FILE
from rigl.rl.study.config_check import check_binding_syntax
from rigl.rl.study.local import (
    available_cores, default_threads, default_workers)
from rigl.rl.study.runs import Run, expand, is_finished
from rigl.rl.study.spec import PACKAGE_ROOT, Study, load_study, parse_grid_flag
from rigl.rl.study.status import status_table

STUDIES = os.path.join(REPO, 'studies')


# 1. Studies: files, grid, names ---------------------------------------------

def test_study_files_expand_to_the_papers_grids(tmp_path):
    for name, script, envs in (('sac_mujoco', 'sac', 5),
                               ('ppo_mujoco', 'ppo', 5),
                               ('dqn_classic_control', 'dqn', 3)):
        study = load_study(os.path.join(STUDIES, f'{name}.toml'))
        runs = expand(study, str(tmp_path))
        assert study.script == script
        # Dense has no sparsity; 4 sparse methods x 5 sparsities; 10 seeds.
        assert len(runs) == envs * (1 + 4 * 5) * 10, name
        groups = {r.group for r in runs}
        assert len(groups) == envs * 21
        assert len({r.root_dir for r in runs}) == len(runs)
        dense = [g for g in groups if 'method=dense' in g]
        assert dense and all('sparsity' not in g for g in dense)
        prune = next(r for r in runs
                     if 'method=prune,sparsity=0.95' in r.group)
        assert 'wrap_all_layers.final_sparsity = 0.95' in prune.bindings
        config = os.path.basename(prune.gin_files[0])
        assert config.startswith(script) and config.endswith(
            '_pruning_config.gin')
        rigl = next(r for r in runs if 'method=rigl,sparsity=0.5' in r.group)
        assert "mask_updater.update_alg = 'rigl'" in rigl.bindings
        assert 'init_masks.sparsity = 0.5' in rigl.bindings
        assert rigl.bindings[-1] == f'train_eval.seed = {rigl.seed}'
        # Seed-major: every group's seed 0 comes before any seed 1.
        assert [r.seed for r in runs[:len(groups)]] == [0] * len(groups)


def test_mini_study_fits_an_afternoon(tmp_path):
    study = load_study(os.path.join(STUDIES, 'sac_mini.toml'))
    runs = expand(study, str(tmp_path))
    assert sorted({r.group for r in runs}) == [
        f'method={m}' + (',sparsity=0.9' if m != 'dense' else '')
        for m in ('dense', 'prune', 'rigl', 'set', 'static')]
    assert len(runs) == 15
    assert "train_eval.num_iterations = 40000" in runs[0].bindings


def test_grid_flags_names_and_errors(tmp_path):
    assert parse_grid_flag("mask_updater.update_alg=['set', 'rigl']") == (
        'mask_updater.update_alg', ['set', 'rigl'])
    for bad in ('nothing', 'a.b=set', 'a.b=[]', "a.b=['x'"):
        with pytest.raises(ValueError):
            parse_grid_flag(bad)
    study = Study(script='sac', grid={
        'init_masks.sparsity': [0.8, 0.9],
        'wrap_all_layers.sparsity': [0.5],   # same last component
        'mask_updater.update_alg': ['', 'rigl'],
        'train_eval.actor_fc_layers': [[16, 16]]}, seeds=2)
    runs = expand(study, str(tmp_path))
    assert len(runs) == 2 * 2 * 2
    assert runs[0].group == ('init_masks.sparsity=0.8,wrap_all_layers.'
                             'sparsity=0.5,update_alg=empty,'
                             'actor_fc_layers=[16,16]')
    assert "train_eval.actor_fc_layers = (16, 16)" in runs[0].bindings
    assert "mask_updater.update_alg = ''" in runs[0].bindings
    with pytest.raises(ValueError, match='neither a gin binding'):
        expand(Study(script='sac', grid={'width': [1]}), '/x')
    with pytest.raises(ValueError, match='no such method'):
        expand(Study(script='sac', grid={'method': ['x']}), '/x')
    with pytest.raises(ValueError, match='share the directory name'):
        expand(Study(script='sac', grid={'a.b': ['x/y', 'x_y']}), '/x')
    # A command-line binding of a grid axis would silently win over it.
    with pytest.raises(ValueError) as refused:
        expand(Study(script='sac', grid={'a.b': ['set', 'rigl']}), '/x',
               ["a.b='set'"])
    assert str(refused.value) == (
        "--gin_bindings=\"a.b='set'\" binds a.b, a grid axis (values "
        "['set', 'rigl']): applied after the grid, it would give every "
        'group its value; drop one of the two.')
    assert default_threads(1) >= 1 and default_threads(64) == 1
    # By default one run per core, one thread each.
    assert default_workers() == available_cores()
    assert default_threads(default_workers()) == 1


@pytest.mark.parametrize('text, message', [
    ('script = "sac"\ngrid = ["a", "b"]\n', 'grid must be a table'),
    ('script = "sac"\n[grid]\nsparsity = 0.9\n',
     "grid 'sparsity' must be a non-empty list; got 0.9"),
    ('script = "sac"\n[grid]\n"a.b" = [{x = 1}]\n',
     "grid 'a.b' has {'x': 1}; allowed values: strings, numbers"),
    ('script = "sac"\nmethods = ["dense", "rigl"]\n',
     'methods must be tables'),
    ('script = "sac"\n[methods]\ndense = "x.gin"\n',
     "method 'dense' must be a table"),
    ('script = "sac"\n[methods.dense]\ngin_files = "a.gin"\n',
     "methods.dense.gin_files must be a list of strings.*got 'a.gin'"),
    ('script = "sac"\n[methods.dense]\nbindings = [1]\n',
     'methods.dense.bindings must be a list of strings'),
    ('script = "sac"\nbindings = "train_eval.seed = 1"\n',
     "bindings must be a list of strings.*got 'train_eval.seed = 1'"),
    ('script = "sac"\ngin_files = [["a.gin"]]\n',
     'gin_files must be a list of strings'),
    ('script = "sac"\nseeds = 2.5\n', 'seeds must be a whole number'),
    ('script = "sac"\nseeds = "3"\n', 'seeds must be a whole number'),
    ('script = "sac"\nseeds = true\n', 'seeds must be a whole number'),
    ('script = 3\n', 'script must be a string'),
])
def test_wrongly_typed_study_files_are_refused(tmp_path, text, message):
    path = tmp_path / 'study.toml'
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        load_study(str(path))
    assert str(caught.value).startswith(f'{path}: ')
    assert len(str(caught.value).splitlines()) == 1


def test_method_axis_values_must_be_names(tmp_path):
    path = tmp_path / 'study.toml'
    path.write_text('script = "sac"\n[grid]\nmethod = [[1]]\n'
                    '[methods.dense]\n')
    with pytest.raises(ValueError, match='methods are named by strings'):
        expand(load_study(str(path)), str(tmp_path))


def test_binding_syntax_is_checked_alone():
    check_binding_syntax(["a.b = 'x'", 'a.c = (16, 16)', 'a.d = @e'])
    for binding, message in (
            ('a.b = (', "'a.b = \\(': an unclosed bracket or quote"),
            ('a.b = rigl', "quote strings, e.g. a.b='rigl'"),
            ('a.b 3', "expected ':' or '='")):
        with pytest.raises(ValueError, match=message):
            check_binding_syntax(['a.ok = 1', binding,
                                  'train_eval.seed = 0'])


def test_root_dir_checks(tmp_path):
    a_file = tmp_path / 'file'
    a_file.write_text('')
    for create in (False, True):
        with pytest.raises(ValueError, match='is a file; give a directory'):
            sweep.check_root_dir(str(a_file), create)
        with pytest.raises(ValueError, match=r'cannot create it \(.*'):
            sweep.check_root_dir(str(a_file / 'study'), create)
    sweep.check_root_dir(str(tmp_path / 'new' / 'study'), create=False)
    assert not (tmp_path / 'new').exists()
    sweep.check_root_dir(str(tmp_path / 'new' / 'study'), create=True)
    assert (tmp_path / 'new' / 'study').is_dir()


@pytest.mark.parametrize('extra, message', [
    (['--threads_per_worker=-1'], '--threads_per_worker=-1: must be >= 1.'),
    (['--threads_per_worker=0'], '--threads_per_worker=0: must be >= 1.'),
    (['--workers=0'], '--workers=0: must be >= 1.'),
    (['--status_every=-5'], '--status_every=-5: must be > 0 seconds.'),
    (['--root_dir=FILE'], '--root_dir FILE is a file; give a directory (it '
     'is created if missing).'),
    (['--root_dir=FILE/study'], '--root_dir FILE/study: cannot create it '
     '(FILE is a file).'),
    (['--gin_bindings=train_eval.num_iterations = ('],
     "cannot parse the gin binding 'train_eval.num_iterations = (': an "
     'unclosed bracket or quote.'),
])
def test_bad_sweep_flags_are_one_line(tmp_path, extra, message):
    """Refused before anything is written or started (no TensorFlow)."""
    a_file = tmp_path / 'FILE'
    a_file.write_text('keep')
    root = tmp_path / 'study'
    extra = [e.replace('FILE', str(a_file)) for e in extra]
    done = subprocess.run(sweep_command(root, '--nocheck_configs', *extra),
                          capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == 'error: ' + message.replace(
        'FILE', str(a_file))
    assert not root.exists() and a_file.read_text() == 'keep'


@pytest.mark.parametrize('extra, message', [
    (['--address=auto'], '--address is for --backend=ray; the local backend '
     'takes --workers and --threads_per_worker.'),
    (['--backend=local', '--cpus_per_run=2'], '--cpus_per_run is for '
     '--backend=ray; the local backend takes --workers and '
     '--threads_per_worker.'),
    (['--backend=ray', '--workers=2'], '--workers is for --backend=local; on '
     'Ray, Ray places the runs: give --cpus_per_run (and --gpus_per_run) '
     'instead.'),
    (['--backend=ray', '--threads_per_worker=2'], '--threads_per_worker is '
     'for --backend=local; on Ray, Ray places the runs: give --cpus_per_run '
     '(and --gpus_per_run) instead.'),
    (['--backend=ray', '--cpus_per_run=0'], '--cpus_per_run=0: must be > 0.'),
    (['--backend=ray', '--cpus_per_run=1.5'], '--cpus_per_run=1.5: above 1 '
     'it must be a whole number (Ray splits only single units), e.g. 0.5, 1 '
     'or 2.'),
    (['--backend=ray', '--gpus_per_run=-0.5'],
     '--gpus_per_run=-0.5: must be >= 0.'),
    (['--backend=ray', '--max_retries=-1'], '--max_retries=-1: must be >= 0.'),
    (['--backend=ray', '--address='], '--address is empty; give auto, '
     'HOST:PORT or local.'),
])
def test_backend_flags_are_checked_in_one_line(tmp_path, extra, message):
    """Either backend's flags, refused without Ray and before anything is
    written."""
    root = tmp_path / 'study'
    done = subprocess.run(
        [sys.executable, '-m', 'rigl.rl.sweep', '--script=sac',
         f'--gin_file={tiny.SAC_SWEEP_CONFIG}', f'--root_dir={root}',
         '--nocheck_configs'] + extra,
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == 'error: ' + message
    assert not root.exists()


def test_the_ray_backend_without_ray_says_how_to_install_it(monkeypatch):
    find_spec = sweep.importlib.util.find_spec
    monkeypatch.setattr(sweep.importlib.util, 'find_spec',
                        lambda name, *args: None if name == 'ray' else
                        find_spec(name, *args))
    with pytest.raises(ValueError, match=(
            r'^--backend=ray needs Ray, an optional extra: pip install -r '
            r'requirements-ray.txt \(docs/cluster.md\).$')):
        sweep.check_ray_installed()


def test_the_local_backend_and_the_report_never_import_ray():
    done = subprocess.run(
        [sys.executable, '-c', 'import sys\n'
         'from rigl.rl import report, sweep\n'
         'print([m for m in sys.modules if m.split(".")[0] == "ray"])'],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'


def test_status_table_names_the_node_of_each_running_run():
    runs = [Run('g', seed, f'/r/g/seed_{seed}', [], [])
            for seed in range(4)]
    runs[0].status = 'done'
    for run, node, attempts in ((runs[1], 'b (10.0.0.2)', 1),
                                (runs[2], 'a (10.0.0.1)', 2)):
        run.status, run.node, run.attempts = 'running', node, attempts
        run.started = time.time()
    table = status_table(runs, 2).splitlines()
    assert table[2:5] == [
        'total        1        2        0        1',
        'running on a (10.0.0.1): g/seed_2 (attempt 2)',
        'running on b (10.0.0.2): g/seed_1']
    # Locally no node is known: the table is as before.
    for run in runs:
        run.node = ''
    assert not any(line.startswith('running on')
                   for line in status_table(runs, 2).splitlines())


def test_bad_fixed_binding_value_is_refused_before_any_run(tmp_path):
    root = tmp_path / 'study'
    done = subprocess.run(sweep_command(
        root, '--gin_bindings=train_eval.batch_size = -3',
        "--grid=mask_updater.update_alg=['set','rigl']"),
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        'error: update_alg=set: train_eval.batch_size must be an integer >= '
        '1, got -3 (no run was started; 1 more group refused too).')
    assert not any(root.glob('*/seed_*'))


# 2. A tiny study end to end -------------------------------------------------

def sweep_command(root, *extra):
    return helpers.sweep_command(root, '--seeds=2', '--workers=2', *extra)


def test_tiny_study_end_to_end(tiny_local_study, tmp_path):
    root = tmp_path / 'study'
    grid = tiny.STUDY_GRID
    # Every group's config is checked before any run starts.
    checked = subprocess.run(sweep_command(root, grid, '--dry_run'),
                             capture_output=True, text=True, cwd=REPO,
                             timeout=300)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    line, = checked.stderr.strip().splitlines()
    assert line.startswith("error: update_alg=bogus: ") and "'bogus'" in line
    assert line.endswith('(no run was started).')
    assert not root.exists()
    # --nocheck_configs leaves it to each run's script.
    unchecked = ['--nocheck_configs', grid]
    listed = subprocess.run(sweep_command(root, *unchecked, '--dry_run'),
                            capture_output=True, text=True, cwd=REPO)
    assert listed.returncode == 0, listed.stderr
    assert '6 runs (3 groups x 2 seeds)' in listed.stdout
    assert not root.exists()  # a dry run writes nothing

    # The runs themselves, one seed of each group: the fixture's sweep (run
    # once for this test and the Ray tests), on 2 workers with
    # --nocheck_configs, as above.
    study_root, first = tiny_local_study
    shutil.copytree(study_root, root)
    # 'bogus' is refused by the script (exit 2); the others still finish.
    assert first.returncode == 1, first.stdout + first.stderr
    assert 'FAILED (exit 2): update_alg=bogus/seed_0' in first.stdout
    with open(root / 'update_alg=bogus' / 'seed_0' / 'log.txt') as f:
        assert "'bogus'; allowed:" in f.read()
    done = sorted(str(p.relative_to(root))
                  for p in root.glob('*/seed_*/final_metric.json'))
    assert done == [f'update_alg={a}/seed_0/final_metric.json'
                    for a in ('rigl', 'set')]
    # The last status table: done, running, failed, to do.
    assert re.search(r'\ntotal +2 +0 +1 +0\n\[[\d:]+\] all runs over',
                     first.stdout), first.stdout

    # Rerun: finished runs are skipped (their logs untouched).
    log = root / 'update_alg=set' / 'seed_0' / 'log.txt'
    before = log.stat().st_mtime_ns, log.read_text()
    second = subprocess.run(sweep_command(
        root, "--grid=mask_updater.update_alg=['set','rigl']", '--seeds=1'),
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert second.returncode == 0, second.stdout + second.stderr
    assert '2 runs: 2 finished before (skipped), 0 to run' in second.stdout
    assert 'checking the configurations' not in second.stdout  # none to do
    assert (log.stat().st_mtime_ns, log.read_text()) == before

    reported = subprocess.run(
        [sys.executable, '-m', 'rigl.rl.report', f'--root_dir={root}',
         '--reps=1000', '--curve_reps=200'],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert reported.returncode == 0, reported.stderr
    with open(root / 'report' / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['method'], r['sparsity'], r['n_seeds'], r['status'])
            for r in rows] == [('set', '0.9', '1', 'complete'),
                               ('rigl', '0.9', '1', 'complete')]
    for row in rows:  # one seed: its score (tests/rl/report: more seeds)
        metric = json.loads((root / f'update_alg={row["method"]}' / 'seed_0'
                             / 'final_metric.json').read_text())
        for column in ('iqm', 'iqm_ci_low', 'iqm_ci_high'):
            assert float(row[column]) == pytest.approx(
                metric['final_return'])
    for name in ('learning_curves', 'final_vs_sparsity',
                 'performance_profiles', 'score_vs_flops'):
        assert_png(root / 'report' / f'{name}.png')
    assert not (root / 'report' / 'anf_connectivity.png').exists()
    text = (root / 'report' / 'report.md').read_text()
    assert 'Not drawn: no run has noise features' in text


def test_finished_runs_are_found_from_another_clone(tmp_path):
    """The command record names the package's gin files relative to its
    root, so moving or recloning the repository does not rerun a study."""
    inside = os.path.join(PACKAGE_ROOT, 'rigl', 'rl', 'tfagents',
                          'configs', 'sac_mujoco_dense_config.gin')
    outside = str(tmp_path / 'mine.gin')
    run = Run(group='method=dense', seed=0,
              root_dir=str(tmp_path / 'run'), gin_files=[inside, outside],
              bindings=['train_eval.seed = 0'])
    assert run.record()['gin_files'] == [
        os.path.join('rigl', 'rl', 'tfagents', 'configs',
                     'sac_mujoco_dense_config.gin'), outside]
    os.makedirs(run.root_dir)
    with open(os.path.join(run.root_dir, SWEEP_COMMAND_FILE), 'w') as f:
        json.dump(run.record(), f)
    with open(os.path.join(run.root_dir, FINAL_METRIC_FILE), 'w') as f:
        f.write('{}')
    assert is_finished(run)
    changed = dataclasses.replace(run, bindings=['train_eval.seed = 1'])
    assert not is_finished(changed)
