"""The report (`rigl.rl.report`): the aggregation (IQM, bootstrap CIs,
normalised scores) worked by hand, the report and its figures from
made-up runs, and bad report inputs. A report of real runs: the tiny study
in tests/rl/study/test_study.py."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, assert_png
from rigl.rl import report
from rigl.rl.study.runs import Run, write_plan


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


# 2. The report on made-up runs (every figure) --------------------------------

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


# 3. Bad report inputs --------------------------------------------------------

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
