"""Studies: the sweep runner, the aggregation (IQM, bootstrap CIs) and the
report, from hand-worked numbers to a tiny study run end to end."""

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from rigl.rl import report
from rigl.rl import sweep
from rigl.rl.layout import FINAL_METRIC_FILE, SWEEP_COMMAND_FILE
from rigl.rl.study.config_check import check_binding_syntax
from rigl.rl.study.local import (
    available_cores, default_threads, default_workers)
from rigl.rl.study.runs import Run, expand, is_finished, write_plan
from rigl.rl.study.spec import PACKAGE_ROOT, Study, load_study, parse_grid_flag
from rigl.rl.study.status import status_table

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
STUDIES = os.path.join(REPO, 'studies')
SAC_SPARSE = 'rigl/rl/tfagents/configs/sac_mujoco_sparse_config.gin'
TINY = [
    "train_eval.env_name='Pendulum-v1'",
    'train_eval.num_iterations=200',
    'train_eval.initial_collect_steps=100',
    'train_eval.actor_fc_layers=(16,16)',
    'train_eval.critic_joint_fc_layers=(16,16)',
    'train_eval.batch_size=16',
    'train_eval.eval_interval=100',
    'train_eval.eval_episodes=1',
    'train_eval.checkpoint_interval=100',
    'train_eval.log_interval=100',
    'mask_updater.update_freq=25',
]
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def assert_png(path):
    with open(path, 'rb') as f:
        head = f.read(8)
    assert head == PNG_SIGNATURE, path
    assert os.path.getsize(path) > 10_000, path  # axes, curves, text


# 1. Aggregation, worked by hand ----------------------------------------------

def test_pinned_stack_imports():
    # rliable 1.2.0 -> arch, which breaks on pandas 3: the pins must hold.
    import arch
    import pandas
    from rliable import library
    assert int(pandas.__version__.split('.')[0]) < 3
    assert arch.__version__ and library.get_interval_estimates
    import matplotlib
    assert matplotlib.get_backend().lower() == 'agg'


def test_iqm_by_hand():
    # 8 scores: 25% trimmed from each end drops 2 + 2, leaving 3, 4, 5, 6.
    assert report.iqm(range(1, 9)) == 4.5
    # One outlier among 8 is trimmed away; the mean keeps it (30 / 8).
    assert report.iqm([0] * 7 + [30]) == 0.0
    # 2 or 3 scores: int(0.25 * n) = 0 trimmed, the IQM is the mean.
    assert report.iqm([0, 10]) == 5.0


def test_bootstrap_ci_by_hand():
    # [0, 10]: a resample holds 0, 1 or 2 tens with probabilities 1/4, 1/2,
    # 1/4, so its IQM (= mean) is 0, 5 or 10; the 2.5th percentile is 0 and
    # the 97.5th is 10 (each end holds 25% > 2.5% of the mass).
    point, low, high = report.iqm_intervals([[0, 10]], reps=500)[0]
    assert (point, low, high) == (5.0, 0.0, 10.0)
    # [0]*7 + [30]: k, the number of 30s in a resample of 8, is
    # Binomial(8, 1/8). The resample's IQM is the mean of its sorted
    # positions 3..6: 0 for k <= 2, 7.5 for k = 3 (one 30 among four),
    # 15 for k = 4, ... P(k <= 2) = 0.933 and P(k <= 3) = 0.989, so the
    # 97.5th percentile is 7.5; the 2.5th is 0 (P(k = 0) = 0.344).
    point, low, high = report.iqm_intervals([[0] * 7 + [30]], reps=2000)[0]
    assert (point, low, high) == (0.0, 0.0, 7.5)
    # Groups of equal size share one bootstrap (a column each), resampled
    # independently: the same answers as alone.
    together = report.iqm_intervals([[0, 10], [10, 0], [1, 1]], reps=500)
    assert together == [(5.0, 0.0, 10.0)] * 2 + [(1.0, 1.0, 1.0)]


def test_bootstrap_is_seeded_and_leaves_numpy_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    first = report.iqm_intervals([list(range(1, 9))], reps=500, seed=4)
    assert np.random.rand() == expected  # global stream untouched
    assert report.iqm_intervals([list(range(1, 9))], reps=500,
                                seed=4) == first
    point, low, high = first[0]
    assert point == 4.5 and 1 <= low < 4.5 < high <= 8


def test_normalised_scores_and_optimality_gap_by_hand():
    stats = report.aggregate([0, 10], reference_iqm=10, reps=500)
    assert stats['mean'] == 5.0 and stats['n'] == 2
    # Divided by the reference IQM: IQM 0.5, CI [0, 1].
    assert (stats['iqm_norm'], stats['iqm_norm_low'],
            stats['iqm_norm_high']) == (0.5, 0.0, 1.0)
    # Optimality gap: 1 - mean(min([0, 1], 1)) = 1 - 0.5.
    assert stats['optimality_gap'] == 0.5
    # Above the reference counts as 1: [20, 5] / 10 -> min(2, 1), 0.5.
    assert report.aggregate([20, 5], 10, reps=200)['optimality_gap'] == 0.25
    # A reference <= 0 (e.g. Pendulum's negative returns) normalises nothing.
    assert np.isnan(report.aggregate([-3, -1], -2, reps=200)['iqm_norm'])


def test_curve_iqm_counts_only_runs_that_got_there():
    curves = [{0: 1.0, 10: 2.0}, {0: 3.0, 10: 4.0}, {0: 5.0}]
    xs, mid, low, high = report.curve_interval(curves, reps=300)
    assert list(xs) == [0, 10]
    assert list(mid) == [3.0, 3.0]  # mean of (1, 3, 5); of (2, 4)
    assert (low[1], high[1]) == (2.0, 4.0)
    assert list(low <= mid) == [True, True] and list(mid <= high) == [True] * 2


# 2. Studies: files, grid, names -----------------------------------------------

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
        prune = next(r for r in runs if 'method=prune,sparsity=0.95' in r.group)
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
         f'--gin_file={SAC_SPARSE}', f'--root_dir={root}',
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


# 3. The report on made-up runs (every figure) ---------------------------------

def write_run(directory, metadata, returns, final=True, settings=None,
              connectivity=False):
    os.makedirs(directory)
    rows = []
    for i, value in enumerate(returns):
        networks = {'actor': {'sparsity': metadata['sparsity'],
                              'parameters': 100, 'flops': 200}}
        if connectivity:
            networks['actor']['input_connectivity'] = {
                'per_real_feature': 50.0 + i, 'per_noise_feature': 50.0 - i}
        rows.append(dict(metadata, step=i * 1000, env_steps=i * 1000,
                         return_mean=float(value), networks=networks,
                         train_flops=1e9 * (1 - metadata['sparsity'])
                         * (i + 1)))
    with open(os.path.join(directory, 'results.jsonl'), 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)
    if final:
        with open(os.path.join(directory, 'final_metric.json'), 'w') as f:
            json.dump(dict(metadata, final_return=float(returns[-1])), f)
    if settings is not None:
        with open(os.path.join(directory, 'run.json'), 'w') as f:
            json.dump(dict(metadata, config={'settings': settings}), f)


def metadata(method, sparsity, seed, env='HalfCheetah-v5', noise=0.0):
    return dict(algorithm='sac', env_name=env, seed=seed, method=method,
                sparsity=sparsity, noise_fraction=noise,
                sparsity_distribution=None if method == 'dense' else 'erk',
                update_alg=None if method in ('dense', 'prune') else method,
                config_hash=f'h{seed}')


@pytest.fixture(scope='module')
def made_up_report(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('made_up'))
    # dense: final returns 100..800 (IQM 450); rigl at 0.9: 0..7 x 100 + 30,
    # width 1 and 2 (a config dimension only run.json names).
    for seed in range(8):
        write_run(f'{root}/dense/seed_{seed}', metadata('dense', 0.0, seed),
                  [0, 50 * (seed + 1), 100 * (seed + 1)],
                  settings={'train_eval.width': 1.0, 'train_eval.seed': seed})
    for width in (1.0, 2.0):
        for seed in range(4):
            write_run(f'{root}/rigl_w{width}/seed_{seed}',
                      metadata('rigl', 0.9, seed),
                      [0, 10, 100 * seed * width + 30],
                      settings={'train_eval.width': width,
                                'train_eval.seed': seed})
    for sparsity in (0.5, 0.9):
        for seed in range(3):
            write_run(f'{root}/set_{sparsity}/seed_{seed}',
                      metadata('set', sparsity, seed),
                      [0, 200, 300 + seed * 10], final=not (
                          sparsity == 0.9 and seed == 2))
    for seed in range(2):  # ANF, another task
        write_run(f'{root}/anf/seed_{seed}',
                  metadata('set', 0.8, seed, env='Hopper-v5', noise=0.9),
                  [0, 100, 200], connectivity=True)
    os.makedirs(f'{root}/empty_dir/seed_0')  # no results: not a run
    return root, report.build_report(root, reps=500, curve_reps=200,
                                     log=lambda _: None)


def test_report_groups_by_every_dimension_but_the_seed(made_up_report):
    _, built = made_up_report
    labels = [g.label for g in built['groups']]
    assert labels == [
        'HalfCheetah-v5, dense, width=1.0',
        'HalfCheetah-v5, set, 50% sparse, width=None',
        'HalfCheetah-v5, set, 90% sparse, width=None',
        'HalfCheetah-v5, rigl, 90% sparse, width=1.0',
        'HalfCheetah-v5, rigl, 90% sparse, width=2.0',
        'Hopper-v5, set, 80% sparse, width=None',
    ]
    groups = {g.label: g for g in built['groups']}
    dense = groups[labels[0]]
    assert dense.stats['n'] == 8
    assert dense.stats['iqm'] == 450.0  # mean of 300, 400, 500, 600
    rigl = groups[labels[3]]
    assert rigl.reference is dense
    # rigl width 1: 30, 130, 230, 330 -> IQM of the middle two: 180.
    assert rigl.stats['iqm'] == 180.0
    assert rigl.stats['iqm_norm'] == pytest.approx(180 / 450)
    assert rigl.stats['iqm_norm_low'] == pytest.approx(
        rigl.stats['iqm_low'] / 450)
    partial = groups[labels[2]]
    assert partial.status == 'partial' and partial.stats['n'] == 2
    assert partial.in_progress == 1
    hopper = groups[labels[5]]
    assert hopper.reference is None and np.isnan(hopper.stats['iqm_norm'])


def test_report_files(made_up_report):
    root, built = made_up_report
    out = os.path.join(root, 'report')
    assert sorted(built['figures']) == sorted(report.FIGURES)
    for name in report.FIGURES:
        assert_png(os.path.join(out, f'{name}.png'))
    with open(os.path.join(out, 'summary.csv')) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    rigl = rows[3]
    assert (rigl['method'], rigl['sparsity'], rigl['train_eval.width'],
            rigl['n_seeds'], rigl['iqm']) == ('rigl', '0.9', '1.0', '4',
                                              '180.0')
    assert float(rigl['iqm_normalized']) == pytest.approx(0.4)
    assert rigl['reference'] == rows[0]['group']
    assert rows[2]['status'] == 'partial' and rows[2]['n_in_progress'] == '1'
    with open(os.path.join(out, 'report.md')) as f:
        text = f.read()
    for name in report.FIGURES:
        assert f'({name}.png)' in text
    assert 'Runs in progress (partial)' in text and 'set_0.9/seed_2' in text


def test_planned_seeds_without_results_make_a_group_partial(tmp_path):
    """A sweep's plan names every run: seeds that never started are counted
    and their groups are not 'complete'; groups with no run are listed."""
    root = str(tmp_path)
    for seed in range(2):
        write_run(f'{root}/dense/seed_{seed}', metadata('dense', 0.0, seed),
                  [0, 100 + seed])
        write_run(f'{root}/rigl/seed_{seed}', metadata('rigl', 0.9, seed),
                  [0, 90 + seed])
    plan = ([Run('dense', s, f'{root}/dense/seed_{s}', [], [])
             for s in range(3)] +
            [Run('rigl', s, f'{root}/rigl/seed_{s}', [], [])
             for s in range(2)] +
            [Run('set', s, f'{root}/set/seed_{s}', [], [])
             for s in range(3)])
    write_plan(root, plan[:4])
    write_plan(root, plan[4:])  # a second sweep into the same root
    built = report.build_report(root, reps=200, curve_reps=100,
                                log=lambda _: None)
    status = {g.method: (g.stats['n'], g.not_started, g.status)
              for g in built['groups']}
    assert status == {'dense': (2, 1, 'partial'), 'rigl': (2, 0, 'complete')}
    with open(os.path.join(root, 'report', 'summary.csv')) as f:
        rows = {r['method']: r for r in csv.DictReader(f)}
    assert rows['dense']['n_not_started'] == '1'
    assert rows['dense']['status'] == 'partial'
    text = open(os.path.join(root, 'report', 'report.md')).read()
    assert '2 (+1 not started)' in text
    assert '1 planned seed not started' in text
    assert 'Planned groups without results' in text and 'set (3 seeds)' in text


# 4. A tiny study end to end ---------------------------------------------------

def sweep_command(root, *extra):
    return ([sys.executable, '-m', 'rigl.rl.sweep', '--script=sac',
             f'--gin_file={SAC_SPARSE}', f'--root_dir={root}', '--seeds=2',
             '--workers=2', '--status_every=1000'] +
            [f'--gin_bindings={b}' for b in TINY] + list(extra))


def test_tiny_study_end_to_end(tmp_path):
    root = tmp_path / 'study'
    grid = "--grid=mask_updater.update_alg=['set','rigl','bogus']"
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

    first = subprocess.run(sweep_command(root, *unchecked),
                           capture_output=True, text=True, timeout=400,
                           cwd=REPO)
    # 'bogus' is refused by the script (exit 2); the others still finish.
    assert first.returncode == 1, first.stdout + first.stderr
    assert 'FAILED (exit 2): update_alg=bogus/seed_0' in first.stdout
    with open(root / 'update_alg=bogus' / 'seed_0' / 'log.txt') as f:
        assert "'bogus'; allowed:" in f.read()
    done = sorted(str(p.relative_to(root))
                  for p in root.glob('*/seed_*/final_metric.json'))
    assert done == [f'update_alg={a}/seed_{s}/final_metric.json'
                    for a in ('rigl', 'set') for s in (0, 1)]
    # The last status table: done, running, failed, to do.
    assert re.search(r'\ntotal +4 +0 +2 +0\n\[[\d:]+\] all runs over',
                     first.stdout), first.stdout

    # Rerun: finished runs are skipped (their logs untouched).
    log = root / 'update_alg=set' / 'seed_0' / 'log.txt'
    before = log.stat().st_mtime_ns, log.read_text()
    second = subprocess.run(sweep_command(
        root, "--grid=mask_updater.update_alg=['set','rigl']"),
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert second.returncode == 0, second.stdout + second.stderr
    assert '4 runs: 4 finished before (skipped), 0 to run' in second.stdout
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
            for r in rows] == [('set', '0.9', '2', 'complete'),
                               ('rigl', '0.9', '2', 'complete')]
    finals = {}
    for path in root.glob('*/seed_*/final_metric.json'):
        metric = json.loads(path.read_text())
        finals.setdefault(metric['method'], []).append(metric['final_return'])
    for row in rows:  # 2 seeds: the IQM is their mean, the CI their range
        scores = finals[row['method']]
        assert float(row['iqm']) == pytest.approx(np.mean(scores))
        assert float(row['iqm_ci_low']) == pytest.approx(min(scores))
        assert float(row['iqm_ci_high']) == pytest.approx(max(scores))
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


# 5. Bad report inputs ---------------------------------------------------------

def two_group_study(root):
    for seed in range(2):
        write_run(f'{root}/dense/seed_{seed}', metadata('dense', 0.0, seed),
                  [0, 100 + seed])
        write_run(f'{root}/rigl/seed_{seed}', metadata('rigl', 0.9, seed),
                  [0, 90 + seed])


@pytest.mark.parametrize('content, why', [
    ({'method': 'rigl', 'final_return_mean': 3.0},
     'has no numeric final_return (got None)'),
    ({'final_return': 'high'}, "has no numeric final_return (got 'high')"),
    ([1, 2], 'has no numeric final_return (got None)'),
    ('{"final_return": ', 'cannot be read (Expecting value'),
])
def test_final_metric_without_final_return_is_skipped_with_a_warning(
        tmp_path, content, why):
    root = str(tmp_path)
    two_group_study(root)
    bad = os.path.join(root, 'rigl', 'seed_1', 'final_metric.json')
    with open(bad, 'w') as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    said = []
    built = report.build_report(root, reps=200, curve_reps=100,
                                log=said.append)
    warnings = [line for line in said if line.startswith('warning: ')]
    assert len(warnings) == 1 and warnings[0].startswith(
        f'warning: {bad} {why}'), said
    assert warnings[0].endswith('the run counts as in progress.')
    status = {g.method: (g.stats['n'], g.in_progress, g.status)
              for g in built['groups']}
    assert status == {'dense': (2, 0, 'complete'),
                      'rigl': (1, 1, 'partial')}


def test_bad_reps_and_unknown_match_are_refused(tmp_path):
    root = str(tmp_path)
    two_group_study(root)
    for name in ('reps', 'curve_reps'):
        for value in (0, -1):
            with pytest.raises(ValueError, match=(
                    f'^--{name}={value}: must be a whole number >= 1')):
                report.build_report(root, **{name: value},
                                    log=lambda _: None)
    with pytest.raises(ValueError, match=(
            "^--match: no dimension 'envname'; allowed: algorithm, "
            'env_name, ')):
        report.build_report(root, match=['algorithm', 'envname'], reps=100,
                            curve_reps=100, log=lambda _: None)
    assert not os.path.exists(os.path.join(root, 'report'))
    # A dimension's last component is enough, as for --reference.
    assert report.resolve_match(
        report.make_groups(report.read_runs(root)),
        ['env_name', 'update_alg']) == ['env_name', 'update_alg']


@pytest.mark.parametrize('flag, message', [
    ('--reps=0', '--reps=0: must be a whole number >= 1 (bootstrap '
     'replications).'),
    ('--curve_reps=-2', '--curve_reps=-2: must be a whole number >= 1 '
     '(bootstrap replications).'),
    ('--match=algorithm,seeds', "--match: no dimension 'seeds'; allowed: "),
])
def test_report_command_bad_input_is_one_line(tmp_path, flag, message):
    two_group_study(str(tmp_path))
    done = subprocess.run(
        [sys.executable, '-m', 'rigl.rl.report', f'--root_dir={tmp_path}',
         flag], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    line, = done.stderr.strip().splitlines()
    assert line.startswith('error: ' + message), line
