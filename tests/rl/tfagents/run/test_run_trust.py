"""Trustworthy runs: same seed, same run; nothing duplicated, mixed or lost;
every bad input one line and exit 2 with nothing damaged.

Most runs here go through `console.run_cli` in this process (the command
line's body without the TF start-up cost); the lock test needs two processes.
"""

import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

import rigl  # noqa: F401

import helpers
import tiny
from rigl.rl.tfagents.run import checkpoints
from helpers import latest_checkpoint, results, run_in_process, snapshot

CONFIGS = helpers.CONFIGS
SAC_DENSE = os.path.join(CONFIGS, 'sac_mujoco_dense_config.gin')
SAC_SPARSE = os.path.join(CONFIGS, 'sac_mujoco_sparse_config.gin')
SAC_PRUNING = os.path.join(CONFIGS, 'sac_mujoco_pruning_config.gin')
PPO_CARTPOLE = os.path.join(CONFIGS, 'ppo_classic_control_config.gin')
SAC_SCRIPT = helpers.script('sac')
# tiny.PPO for 2 iterations of one environment, evaluated over 2 episodes.
PPO_TINY = tiny.PPO + [
    'train_eval.num_iterations = 2',
    'train_eval.num_parallel_environments = 1',
    'train_eval.eval_episodes = 2',
]
SET = ["mask_updater.update_alg = 'set'", 'mask_updater.update_freq = 25']


def sac(root, *extra, config=SAC_SPARSE, allow=False):
    return run_in_process('sac', root, config, tiny.SAC + list(extra), allow)


def ok(outcome):
    code, out, err = outcome
    assert code == 0, err[-2000:]
    return out


def returns(root):
    return [(row['step'], row['return_mean']) for row in results(root)]


@pytest.fixture(scope='module')
def finished_sac(tmp_path_factory):
    """A finished sparse SET run (checkpoints at 100 and 200)."""
    root = tmp_path_factory.mktemp('finished') / 'run'
    ok(sac(root, *SET))
    return root


def copy_of(finished, tmp_path):
    root = tmp_path / 'run'
    shutil.copytree(finished, root)
    return root


# 1. Reproducibility -------------------------------------------------------

def test_same_seed_gives_the_same_run(tmp_path):
    """A dense SAC run twice (another seed: the next test). Sparse runs of
    every agent: test_bit_identical_resume, whose same-seed runs (one of
    them killed and resumed) end bit-identical."""
    runs = [tmp_path / 'a', tmp_path / 'b']
    for root in runs:
        ok(run_in_process('sac', root, SAC_DENSE, tiny.SAC))
    assert returns(runs[0]) == returns(runs[1])


def test_another_seed_gives_another_run_and_other_set_updates(
        finished_sac, tmp_path):
    # Same initial masks for both seeds (bound mask seed is not enough:
    # init_masks seeds derive from the run seed), so compare how SET
    # regrows: two seeds must not regrow identically. Seed 0 is the
    # module's finished run.
    ok(sac(tmp_path / 's1', *SET, 'train_eval.seed = 1'))
    assert returns(tmp_path / 's1') != returns(finished_sac)
    first, second = (helpers.checkpoint_masks(latest_checkpoint(root))
                     for root in (finished_sac, tmp_path / 's1'))
    assert any(not np.array_equal(first[k], second[k]) for k in first)


def test_resume_continues_the_environment_stream(finished_sac, tmp_path):
    root = copy_of(finished_sac, tmp_path)
    out = ok(sac(root, *SET, 'train_eval.num_iterations = 400', allow=True))
    assert 'Resumed from' in out and 'at train step 200' in out
    with open(os.path.join(latest_checkpoint(root), 'state.json')) as f:
        assert json.load(f)['env_steps'] == 500
    with np.load(os.path.join(latest_checkpoint(root), 'replay.npz')) as data:
        observations = data['observation']
    # Pendulum episodes last 200 steps: resets at env steps 0 and 200, and
    # the resumed run's first reset at 300. Reseeding from the run seed
    # (as before) would repeat the very first start state there.
    assert not np.allclose(observations[300], observations[0])
    assert not np.allclose(observations[300], observations[200])


# 2. No data duplicated, mixed or lost ------------------------------------

def test_attempt_without_checkpoint_is_replaced_cleanly(tmp_path):
    """A run killed before its first checkpoint (its start marker is
    there): its own outputs go, a user's file among them stays."""
    root = tmp_path / 'run'
    os.makedirs(root / 'train')
    (root / '.started_without_checkpoint').write_text('')
    (root / 'results.jsonl').write_text('{"step": 100, "return_mean": 5}\n')
    (root / 'train' / 'events.out.tfevents.1.host').write_text('')
    (root / 'train' / 'notes.txt').write_text('mine')
    out = ok(sac(root))
    assert 'removed outputs of an earlier attempt' in out
    assert [row['step'] for row in results(root)] == [100, 200]
    assert (root / 'train' / 'notes.txt').read_text() == 'mine'
    assert not (root / 'train' / 'events.out.tfevents.1.host').exists()
    assert not (root / '.started_without_checkpoint').exists()


def test_first_checkpoint_removes_the_start_marker(tmp_path):
    root = tmp_path / 'run'
    ok(sac(root, 'train_eval.checkpoint_interval = 100'))
    assert not (root / '.started_without_checkpoint').exists()


@pytest.mark.parametrize('files, message', [
    # A finished run whose checkpoints were deleted to save disk.
    ({'final_metric.json': '{"final_return": 5}', 'results.jsonl': '{}\n'},
     'holds a finished run (final_metric.json) with no checkpoint'),
    # A user's directory that happens to hold run-like names.
    ({'train/mine.txt': 'x', 'results.jsonl': 'my notes\n'},
     'holds results.jsonl, train but no checkpoint of a run started here'),
    # A copy of a shipped agent (a policy and its results, no checkpoint).
    ({'policy/saved_model.pb': 'x', 'run.json': '{}'},
     'holds run.json, policy but no checkpoint'),
])
def test_outputs_without_proof_of_a_killed_attempt_are_never_deleted(
        tmp_path, files, message):
    root = tmp_path / 'run'
    for name, content in files.items():
        os.makedirs((root / name).parent, exist_ok=True)
        (root / name).write_text(content)
    before = snapshot(root)
    code, _, err = sac(root)
    assert code == 2 and err.count('\n') == 1, err
    assert message in err and 'Use another root_dir' in err
    assert snapshot(root) == before


def damage_latest(directory, damage):
    """Damages the `latest` pointer file of a checkpoints directory."""
    if damage == 'delete latest':
        os.remove(directory / 'latest')
    elif damage == 'dangling latest':
        (directory / 'latest').write_text('ckpt-999')
    elif damage == 'empty latest':
        (directory / 'latest').write_text('')


@pytest.mark.parametrize('damage', ['delete latest', 'empty latest'])
def test_the_latest_pointer_is_not_what_resume_trusts(finished_sac, tmp_path,
                                                      damage):
    """Resume lists the complete checkpoint directories, newest first; the
    `latest` file is for people and tools. Resuming past one damaged
    pointer is run end to end below ('dangling latest')."""
    root = copy_of(finished_sac, tmp_path)
    damage_latest(root / 'checkpoints', damage)
    newest = checkpoints.Checkpointer(str(root)).candidates()
    assert [os.path.basename(path) for path in newest] == ['ckpt-200',
                                                           'ckpt-100']


@pytest.mark.parametrize('damage, resumes_at', [
    ('dangling latest', 200),
    ('truncate tf data', 100),
    ('delete tf index', 100),
    ('truncate replay', 100),
])
def test_damaged_checkpoints_fall_back(finished_sac, tmp_path, damage,
                                       resumes_at):
    root = copy_of(finished_sac, tmp_path)
    directory = root / 'checkpoints'
    newest = directory / 'ckpt-200'
    damage_latest(directory, damage)
    if damage == 'truncate tf data':
        data = next(p for p in newest.iterdir() if 'data' in p.name)
        data.write_bytes(data.read_bytes()[:100])
    elif damage == 'delete tf index':
        os.remove(newest / 'tf.index')
    elif damage == 'truncate replay':
        replay = newest / 'replay.npz'
        replay.write_bytes(replay.read_bytes()[:1000])
    out = ok(sac(root, *SET, 'train_eval.num_iterations = 300', allow=True))
    assert f'at train step {resumes_at}.' in out
    if resumes_at == 100:
        assert f'warning: cannot restore {newest}' in out
    # Rows past the checkpoint were dropped, then written again once each.
    assert [row['step'] for row in results(root)] == [100, 200, 300]
    assert len(os.listdir(directory)) >= 3  # two checkpoints and latest


def test_second_process_on_a_run_dir_is_refused(tmp_path):
    root = tmp_path / 'run'
    args = helpers.training_command(SAC_SCRIPT, root, SAC_SPARSE, tiny.SAC + [
        'train_eval.num_iterations = 100000'])
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        lock = root / '.lock'
        deadline = time.time() + 120
        while time.time() < deadline and not (
                lock.exists() and lock.read_text().strip()):
            time.sleep(0.2)
        code, _, err = sac(root)
        assert code == 2
        assert err.count('\n') == 1
        assert f'root_dir {root} is in use by process {first.pid}' in err
    finally:
        first.kill()
        first.wait()


def test_changed_config_is_refused_and_nothing_changes(finished_sac):
    before = snapshot(finished_sac)
    code, _, err = sac(finished_sac, *SET, 'train_eval.seed = 5',
                       'init_masks.sparsity = 0.5')
    assert code == 2 and err.count('\n') == 1
    assert 'train_eval.seed 0 -> 5' in err
    assert 'init_masks.sparsity 0.9 -> 0.5' in err
    assert 'cannot change sparsity 0.9 -> 0.5' in err
    code, _, err = sac(finished_sac, *SET, 'train_eval.seed = 5')
    assert code == 2 and err.count('\n') == 1
    assert 'or pass --allow_config_change' in err
    code, _, err = run_in_process('ppo', finished_sac, PPO_CARTPOLE, PPO_TINY)
    assert code == 2 and 'holds a sac run; this is ppo' in err
    assert snapshot(finished_sac) == before


def _forget_setting(root, key: str) -> None:
    """Removes `key` from the config records of every checkpoint of a run,
    as code from before that setting wrote them."""
    for path in (root / 'checkpoints').glob('ckpt-*'):
        config = json.loads((path / checkpoints.CONFIG_FILE).read_text())
        config['settings'].pop(key, None)
        (path / checkpoints.CONFIG_FILE).write_text(json.dumps(config))


def test_a_run_recorded_before_a_setting_existed_resumes_unchanged(
        finished_sac, tmp_path):
    """A checkpoint without `train_eval.save_final_policy` (written before
    it existed) resumes without --allow_config_change: the missing setting
    counts as the value that does what the code did then (`ADDED_SETTINGS`,
    here True; the tiny settings turn it off)."""
    root = copy_of(finished_sac, tmp_path)
    _forget_setting(root, 'train_eval.save_final_policy')
    out = ok(sac(root, *SET, tiny.WITH_POLICY))
    assert 'Resumed from' in out and 'changed config' not in out
    # Turning it off is a change like any other.
    _forget_setting(root, 'train_eval.save_final_policy')
    code, _, err = sac(root, *SET)
    assert code == 2 and (
        'train_eval.save_final_policy True -> False' in err), err


@pytest.mark.parametrize('binding, message', [
    ('train_eval.critic_joint_fc_layers = (8, 8)', 'can be restored'),
    ('train_eval.num_iterations = 100', 'past the end of this run'),
    ('train_eval.replay_capacity = 150', 'room for 150'),
])
def test_impossible_resume_fails_in_one_line(finished_sac, tmp_path, binding,
                                             message):
    root = copy_of(finished_sac, tmp_path)
    before = snapshot(root)
    code, _, err = sac(root, *SET, binding, allow=True)
    assert code == 2 and err.count('\n') == 1
    assert message in err
    assert snapshot(root) == before


def test_partial_results_line_is_dropped_with_a_warning(finished_sac,
                                                        tmp_path):
    root = copy_of(finished_sac, tmp_path)
    with open(root / 'results.jsonl', 'a') as f:
        f.write('{"step": 300, "return_')
    out = ok(sac(root, *SET, 'train_eval.num_iterations = 300', allow=True))
    assert 'warning: dropped unreadable line 3' in out
    assert [row['step'] for row in results(root)] == [100, 200, 300]


def test_rows_and_final_metric_say_which_run(finished_sac):
    expected = {'algorithm': 'sac', 'env_name': 'Pendulum-v1', 'seed': 0,
                'method': 'set', 'sparsity': 0.9,
                'sparsity_distribution': 'erdos_renyi_kernel',
                'update_alg': 'set'}
    with open(finished_sac / 'final_metric.json') as f:
        metric = json.load(f)
    for record in results(finished_sac) + [metric]:
        assert {k: record[k] for k in expected} == expected
        assert len(record['config_hash']) == 12
    with open(finished_sac / 'run.json') as f:
        assert json.load(f)['config_hash'] == metric['config_hash']


# 3. Every bad input: one line, exit 2, nothing damaged -------------------

BAD_INPUTS = [
    ("mask_updater.init_drop_fraction = '0.3'",
     "mask_updater.init_drop_fraction must be a finite number in [0, 1], "
     "got '0.3'"),
    ("train_eval.seed = 'abc'", "train_eval.seed must be an integer >= 0 or "
     "None, got 'abc'"),
    ('train_eval.seed = -1', 'train_eval.seed must be an integer >= 0'),
    ('train_eval.actor_learning_rate = 1e999',
     'train_eval.actor_learning_rate must be a finite number > 0, got inf'),
    ('train_eval.gamma = 1e999', 'train_eval.gamma must be a finite number'),
    ('train_eval.critic_learning_rate = -0.001',
     'train_eval.critic_learning_rate must be a finite number > 0'),
    ('init_masks.closeness = 1e999', 'closeness'),
    ('init_masks.erk_power_scale = 1e999', 'erk_power_scale'),
    ('train_eval.actor_fc_layers = (0,)',
     'train_eval.actor_fc_layers must be a tuple of integers >= 1'),
    ('train_eval.critic_joint_fc_layers = (-4, 8)',
     'train_eval.critic_joint_fc_layers must be a tuple of integers >= 1'),
    ('train_eval.batch_size = 500', 'train_eval.batch_size 500 exceeds the '
     '100 transitions'),
    ('train_eval.initial_collect_steps = 0',
     'train_eval.initial_collect_steps must be an integer >= 1, got 0'),
    ("train_eval.env_name = Pendulum-v1", 'quote strings'),
    ('train_eval.no_such_setting = 1',
     'train_eval.no_such_setting is not a SAC setting'),
    ("train_eval.train_mode_actor = 'sprase'",
     "train_eval.train_mode_actor is 'sprase'; allowed: dense, sparse"),
]


@pytest.mark.parametrize('binding, message', BAD_INPUTS)
def test_bad_sac_input(finished_sac, binding, message):
    before = snapshot(finished_sac)
    code, out, err = sac(finished_sac, *SET, binding)
    assert code == 2, out[-1000:]
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert message in err
    assert snapshot(finished_sac) == before


@pytest.mark.parametrize('binding, message', [
    ("train_eval.learning_rate = 'abc'",
     "train_eval.learning_rate must be a finite number > 0, got 'abc'"),
    ('train_eval.num_iterations = 0', 'train_eval.num_iterations must be an '
     'integer >= 1 or None, got 0'),
    ('train_eval.num_iterations = -2', 'got -2'),
    ('train_eval.num_iterations = 1.5', 'got 1.5'),
    ('train_eval.num_environment_steps = -1',
     'train_eval.num_environment_steps must be an integer >= 1, got -1'),
])
def test_bad_ppo_input(tmp_path, binding, message):
    code, _, err = run_in_process('ppo', tmp_path / 'run', PPO_CARTPOLE,
                                  PPO_TINY + [binding])
    assert code == 2 and err.count('\n') == 1, err
    assert message in err
    assert not (tmp_path / 'run').exists()


def test_gin_syntax_error_in_a_file(tmp_path):
    config = tmp_path / 'broken.gin'
    config.write_text("train_eval.actor_fc_layers = (256, 256\n")
    code, _, err = run_in_process('sac', tmp_path / 'run', str(config), [])
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1


def test_root_dir_that_is_a_file(tmp_path):
    path = tmp_path / 'file'
    path.write_text('keep me')
    code, _, err = sac(path)
    assert code == 2 and 'is a file, not a directory' in err
    assert path.read_text() == 'keep me'


def test_schedule_past_the_run_is_announced(tmp_path):
    out = ok(sac(tmp_path / 'run', 'wrap_all_layers.begin_step = 100',
                 'wrap_all_layers.end_step = 1000',
                 'wrap_all_layers.frequency = 100', config=SAC_PRUNING))
    assert ("warning: wrap_all_layers.end_step=1000 is past the run's 200 "
            'train steps: pruning stops at sparsity') in out


@pytest.mark.parametrize('values, method, sparsity', [
    ({'train_eval.train_mode_actor': 'dense',
      'train_eval.train_mode_value': 'dense',
      'init_masks.sparsity': 0.9}, 'dense', 0.0),
    ({'train_eval.train_mode': 'sparse', 'wrap_all_layers.mode': 'prune',
      'wrap_all_layers.final_sparsity': 0.95,
      'init_masks.sparsity': 0.0}, 'prune', 0.95),
    ({'train_eval.train_mode_actor': 'sparse', 'init_masks.sparsity': 0.8,
      'mask_updater.update_alg': ''}, 'static', 0.8),
    ({'train_eval.train_mode_value': 'sparse', 'init_masks.sparsity': 0.9,
      'mask_updater.update_alg': 'rigl'}, 'rigl', 0.9),
])
def test_metadata_names_the_method(values, method, sparsity):
    from rigl.rl.tfagents.run import run_dir
    record = {'algorithm': 'sac', 'settings': values, 'config_hash': 'x'}
    metadata = run_dir.metadata(record, seed=3)
    assert (metadata['method'], metadata['sparsity'], metadata['seed']) == (
        method, sparsity, 3)


def test_tensorboard_drops_summaries_past_the_resumed_checkpoint(tmp_path):
    """Events a killed run wrote after its checkpoint are purged by
    TensorBoard once the run resumes and writes those steps again."""
    from tensorboard.backend.event_processing import (
        plugin_event_accumulator as event_accumulator)
    import tensorflow as tf
    from rigl.rl.tfagents.run import summaries

    log_dir = str(tmp_path / 'train')
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for step in range(1, 11):  # the first attempt, checkpoint at 5
            tf.summary.scalar('loss', float(step), step=step)
    writer.close()
    assert summaries.mark_restart(log_dir, 6) is not None
    # Event files sort by their creation second: a resume comes later.
    time.sleep(1.1)
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for step in range(6, 9):  # the resumed attempt
            tf.summary.scalar('loss', 100.0 + step, step=step)
    writer.close()
    accumulator = event_accumulator.EventAccumulator(
        log_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    events = accumulator.Tensors('loss')
    steps = [event.step for event in events]
    values = [float(tf.make_ndarray(event.tensor_proto)) for event in events]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert values == [1, 2, 3, 4, 5, 106, 107, 108]
    assert summaries.mark_restart(str(tmp_path / 'none'), 3) is None


@pytest.mark.parametrize('binding, change', [
    ("mask_updater.update_alg = 'rigl'", "method 'set' -> 'rigl'"),
    ('init_masks.sparsity = 0.5', 'sparsity 0.9 -> 0.5'),
    ("init_masks.mask_init_method = 'uniform'",
     "sparsity_distribution 'erdos_renyi_kernel' -> 'uniform'")])
def test_allowed_change_still_refuses_what_the_checkpoint_fixes(
        finished_sac, binding, change):
    before = snapshot(finished_sac)
    code, _, err = run_in_process('sac', finished_sac, SAC_SPARSE,
                                  tiny.SAC + SET + [binding],
                                  allow_config_change=True)
    assert code == 2 and err.count('\n') == 1, err
    assert f'cannot change {change}' in err
    assert snapshot(finished_sac) == before
