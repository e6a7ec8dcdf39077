"""The view command: a saved policy runs on its environment and is written
to a video; the Python API; clear errors; the shipped trained agent."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import rigl  # noqa: F401

import helpers
import tiny
from rigl.rl import view

REPO = helpers.REPO
SAC_CONFIG = helpers.config('sac_mujoco_dense_config.gin')
PRETRAINED = os.path.join(REPO, 'pretrained')
TINY = tiny.SAC + [
    'train_eval.num_iterations = 100',
    'train_eval.initial_collect_steps = 50',
    'train_eval.policy_save_interval = 50',
    tiny.WITH_POLICY,
]
EPISODE_LINE = re.compile(r'^episode (\d+): return (-?[\d.]+), length (\d+)$',
                          re.MULTILINE)


@pytest.fixture(scope='module')
def run_root(tmp_path_factory):
    """A tiny trained SAC run on Pendulum (policy/ and policies/)."""
    root = tmp_path_factory.mktemp('view_run')
    code, _, err = helpers.run_in_process('sac', root, SAC_CONFIG, TINY)
    assert code == 0, err[-2000:]
    return root


def view_command(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'rigl.rl.view', *args],
                          capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def test_writes_mp4_from_run_root(run_root, tmp_path):
    video = tmp_path / 'pendulum.mp4'
    completed = view_command(f'--policy_dir={run_root}', '--episodes=2',
                             '--max_steps=10', f'--video={video}')
    assert completed.returncode == 0, completed.stderr[-2000:]
    episodes = EPISODE_LINE.findall(completed.stdout)
    assert [(number, length) for number, _, length in episodes] == [
        ('1', '10'), ('2', '10')], completed.stdout
    with open(video, 'rb') as f:
        assert f.read(12)[4:8] == b'ftyp'  # an MP4 (ISO media) file
    import imageio.v3 as iio
    frames = iio.imread(video)
    assert frames.shape[0] == 22  # each episode: first frame + 10 steps
    assert frames.ndim == 4 and frames.shape[-1] == 3
    assert frames.std() > 0  # not a blank image


def test_writes_gif_from_saved_policy_of_a_step(run_root, tmp_path, capsys):
    """A policies/policy-<step> directory finds its run's env upward."""
    video = tmp_path / 'pendulum.gif'
    code = view.main([f'--policy_dir={run_root}/policies/policy-50',
                      '--max_steps=5', f'--video={video}'])
    out = capsys.readouterr().out
    assert code == 0
    assert EPISODE_LINE.findall(out)[0][2] == '5'
    with open(video, 'rb') as f:
        assert f.read(6) == b'GIF89a'
    import imageio.v3 as iio
    assert iio.imread(video).shape[0] == 6


def test_random_actions_need_no_policy(capsys):
    code = view.main(['--random', '--env_name=Pendulum-v1', '--max_steps=7',
                      '--seed=1'])
    assert code == 0
    assert EPISODE_LINE.findall(capsys.readouterr().out)[0][2] == '7'


def test_python_api_loads_and_acts(run_root):
    policy = view.load_policy(str(run_root))
    env = view.make_environment(str(run_root), seed=0)
    time_step = env.reset()
    action = policy.action(time_step)
    assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0
    # Greedy: the same observation gives the same action.
    np.testing.assert_array_equal(policy.action(time_step), action)
    for _ in range(3):
        time_step = env.step(policy.action(time_step))
    assert time_step.observation.shape == (3,)


def test_environment_follows_the_run_noise_layout(tmp_path):
    """The view env has the run's noise features and feature permutation."""
    from rigl.rl.tfagents import anf
    from rigl.rl.tfagents import envs
    from rigl.rl.tfagents.run import seeding

    noise = {'create_environment.noise_fraction': 0.5,
             'create_environment.permute_features': True,
             'create_environment.noise_std': 1.0}
    with open(tmp_path / 'run.json', 'w') as f:
        json.dump({'env_name': 'Pendulum-v1', 'seed': 3,
                   'config': {'settings': dict(
                       noise, **{'train_eval.env_name': 'Pendulum-v1'})}}, f)
    env = view.make_environment(str(tmp_path), seed=0)
    training = envs.create_environment(
        'Pendulum-v1', seed=seeding.derive(3, 'env', 0), noise_fraction=0.5,
        permute_features=True)
    assert env.observation_spec().shape == (6,)
    np.testing.assert_array_equal(anf.noise_feature_mask(env),
                                  anf.noise_feature_mask(training))


@pytest.mark.parametrize('args, message', [
    (['--policy_dir=/no/such/dir'], 'no such directory'),
    (['--episodes=2'], '--policy_dir is required'),
    (['--random'], 'needs --env_name'),
    (['--random', '--env_name=Pendulum-v1', '--video=out.avi'],
     "unsupported file type '.avi'"),
    (['--random', '--env_name=Pendulum-v1', '--episodes=0'], 'must be >= 1'),
    # /proc takes no new files, even from root: refused before any episode.
    (['--random', '--env_name=Pendulum-v1', '--video=/proc/sparserl.gif'],
     '--video /proc/sparserl.gif: cannot write it: '),
])
def test_clear_errors(args, message, capsys):
    assert view.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and message in err
    assert len(err.splitlines()) == 1


def test_dir_without_policy_names_saved_ones(run_root, tmp_path, capsys):
    os.makedirs(tmp_path / 'policies')
    os.symlink(run_root / 'policies' / 'policy-50',
               tmp_path / 'policies' / 'policy-50')
    assert view.main([f'--policy_dir={tmp_path}']) == 2
    err = capsys.readouterr().err
    assert 'no final policy' in err and 'policy-50' in err
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert view.main([f'--policy_dir={empty}']) == 2
    assert 'holds no saved policy' in capsys.readouterr().err


def test_wrong_environment_is_refused(run_root, capsys):
    assert view.main([f'--policy_dir={run_root}',
                      '--env_name=MountainCarContinuous-v0']) == 2
    err = capsys.readouterr().err
    assert 'takes observations of shape (3,)' in err and '(2,)' in err


@pytest.mark.parametrize('agent', ['halfcheetah_anf_sac', 'halfcheetah_td3'])
def test_pretrained_halfcheetah_scores_above_3000(agent, capsys):
    code = view.main([f'--policy_dir={os.path.join(PRETRAINED, agent)}',
                      '--episodes=1'])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    (_, score, length), = EPISODE_LINE.findall(out)
    assert length == '1000'
    assert float(score) > 3000, out


def test_checkpoint_acts_as_the_saved_policy_of_its_step(run_root, tmp_path,
                                                         capsys):
    """A checkpoint is watched through its rebuilt greedy policy: at the
    final step it acts exactly as the saved final policy."""
    checkpoint = run_root / 'checkpoints' / 'ckpt-100'
    restored = view.load_policy(str(checkpoint))
    assert isinstance(restored, view.CheckpointPolicy)
    saved = view.load_policy(str(run_root / 'policy'))
    env = view.make_environment(str(checkpoint), seed=4)
    time_step = env.reset()
    for _ in range(5):
        action = restored.action(time_step)
        np.testing.assert_allclose(action, saved.action(time_step),
                                   rtol=1e-5, atol=1e-6)
        time_step = env.step(action)
    # A run root without a final policy (a run still going, or killed) is
    # watched from its newest checkpoint.
    unfinished = tmp_path / 'unfinished'
    unfinished.mkdir()
    for name in ('run.json', 'checkpoints'):
        os.symlink(run_root / name, unfinished / name)
    assert view.main([f'--policy_dir={unfinished}', '--max_steps=4']) == 0
    captured = capsys.readouterr()
    assert 'restored from' in captured.err and 'ckpt-100' in captured.err
    assert EPISODE_LINE.findall(captured.out)[0][2] == '4'


def test_unwritable_video_is_refused_before_the_episodes(tmp_path, capsys,
                                                        monkeypatch):
    ran = []
    monkeypatch.setattr(view, 'run_episodes',
                        lambda *args: ran.append(args) or [0.0])
    read_only = tmp_path / 'read_only.mp4'
    read_only.write_bytes(b'an old video')
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path) == str(read_only):
            raise PermissionError(13, 'Permission denied', str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr('builtins.open', refusing_open)
    assert view.main(['--random', '--env_name=Pendulum-v1',
                      f'--video={read_only}']) == 2
    monkeypatch.undo()
    assert capsys.readouterr().err.strip() == (
        f'error: --video {read_only}: cannot write it: Permission denied.')
    assert not ran
    assert read_only.read_bytes() == b'an old video'
    # A writable new path is checked without leaving a file behind.
    view._check_video_path(str(tmp_path / 'new' / 'clip.gif'))
    assert os.listdir(tmp_path / 'new') == []


def _unfinished_with_a_truncated_newest(run_root, tmp_path):
    """A run root without a final policy whose newest checkpoint
    (ckpt-150) was cut short; ckpt-100 is whole."""
    import shutil

    unfinished = tmp_path / 'unfinished'
    checkpoints = unfinished / 'checkpoints'
    checkpoints.mkdir(parents=True)
    os.symlink(run_root / 'run.json', unfinished / 'run.json')
    shutil.copytree(run_root / 'checkpoints' / 'ckpt-100',
                    checkpoints / 'ckpt-100')
    shutil.copytree(run_root / 'checkpoints' / 'ckpt-100',
                    checkpoints / 'ckpt-150')
    data = checkpoints / 'ckpt-150' / 'tf.data-00000-of-00001'
    content = data.read_bytes()
    data.write_bytes(content[:len(content) // 2])
    return unfinished


def test_truncated_newest_checkpoint_falls_back(run_root, tmp_path, capsys):
    unfinished = _unfinished_with_a_truncated_newest(run_root, tmp_path)
    newest = unfinished / 'checkpoints' / 'ckpt-150'
    older = unfinished / 'checkpoints' / 'ckpt-100'
    assert view.main([f'--policy_dir={unfinished}', '--max_steps=3']) == 0
    captured = capsys.readouterr()
    warning, restored = captured.err.strip().splitlines()
    assert warning.startswith(f'warning: cannot restore {newest}: ')
    assert warning.endswith('; trying an older checkpoint.')
    assert restored == f'policy: greedy policy restored from {older}'
    assert EPISODE_LINE.findall(captured.out)[0][2] == '3'
    # Named by itself, the damaged checkpoint is one line naming an older.
    assert view.main([f'--policy_dir={newest}', '--max_steps=3']) == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f'error: cannot restore {newest}: ')
    assert line.endswith(f'; an older checkpoint: {older}')
    # Every checkpoint damaged: one line.
    data = older / 'tf.data-00000-of-00001'
    data.write_bytes(data.read_bytes()[:10])
    assert view.main([f'--policy_dir={unfinished}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f'error: none of the 2 checkpoints of '
                              f'{unfinished} can be restored; newest: '
                              f'cannot restore {newest}: ')
