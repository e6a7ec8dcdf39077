"""The run directory's life: start or resume, lock, checkpoints.

`RunDirectory` is the part of a session that decides whether a run starts
from step 0 or resumes. Before anything is built it reads the config of the
newest checkpoint (a resumed run keeps its seed and sparse execution);
`open` then checks the config against it (a changed config exits), locks
the directory, and restores the newest complete checkpoint, falling back to
older ones, or prepares a clean start. `save` writes a checkpoint.

Besides TF objects and replay, a checkpoint holds:

  state.json    `RunState` (the run's counters) and `streams`, every random
                stream that can be saved (the session says which)
  resume.json   what a resume needs to continue the episodes in progress:
                the training environments' states, the loop's own state
                (episode returns, ...) and the plasticity meter's memory
                (`resume_record`, `restore_episodes`)

The lock, the config guard and the clean-start rules are `run.run_dir`'s;
the atomic writes and the fallback are `run.checkpoints`'.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from rigl.rl.tfagents.run import checkpoints
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import env_state
from rigl.rl.tfagents.run import run_dir as run_dir_lib
from rigl.rl.tfagents.run import seeding


@dataclasses.dataclass
class RunState:
    """Counters a run carries across checkpoints."""
    iteration: int = 0
    env_steps: int = 0
    episodes: int = 0
    wall_time: float = 0.0
    train_flops: float = 0.0
    recent_returns: List[float] = dataclasses.field(default_factory=list)
    loop_seconds: float = 0.0
    train_call_seconds: float = 0.0
    collect_seconds: float = 0.0


@dataclasses.dataclass
class Opened:
    """How `RunDirectory.open` found the directory.

    Attributes:
        path: the checkpoint restored (None: a clean start).
        removed: outputs of an earlier attempt without a checkpoint,
            removed for the clean start.
        resume: the restored checkpoint's `resume.json` (None if absent).
    """
    path: Optional[str]
    removed: List[str]
    resume: Optional[Dict]


class RunDirectory:
    """Start or resume, lock and checkpoints of one run directory.

    Args:
        root_dir: the run directory.
    """

    def __init__(self, root_dir: str):
        self.root_dir = root_dir
        self._dir = run_dir_lib.RunDir(root_dir)
        probe = checkpoints.Checkpointer(root_dir)
        # The config of the newest checkpoint that has one (None: none).
        self.saved_config: Optional[Dict] = next(filter(None, map(
            probe.read_config, probe.candidates())), None)
        self._checkpointer: Optional[checkpoints.Checkpointer] = None
        self._env_state_warned = False

    def run_seed(self, seed: Optional[int]) -> int:
        """The run's seed: `seed`, else a resumed run's own, else drawn."""
        if seed is None and self.saved_config is not None:
            return int(self.saved_config.get('seed', seeding.resolve(None)))
        return seeding.resolve(seed)

    @property
    def saved_settings(self) -> Optional[Dict]:
        """The settings record of the checkpoint to resume (None: none)."""
        return (self.saved_config or {}).get('settings')

    def track(self, **trackables) -> None:
        """The TF objects every checkpoint saves and restores."""
        self._checkpointer = checkpoints.Checkpointer(self.root_dir,
                                                      **trackables)

    def newest_step(self) -> Optional[int]:
        """The train step of the newest complete checkpoint (None: none)."""
        newest = self._checkpointer.candidates()[:1]
        return self._checkpointer.step_of(newest[0]) if newest else None

    def open(self, record: Dict, allow_config_change: bool,
             total_train_steps: int, state: RunState, replay,
             restore_streams: Callable[[Dict], None]) -> Opened:
        """Checks the config, locks the directory and restores the newest
        readable checkpoint (TF objects, `replay`, `state` in place and,
        through `restore_streams`, the random streams), or prepares a
        clean start.

        Raises:
            ValueError: a config that cannot resume this run, a checkpoint
                past the end of the run, or no checkpoint restorable.
            console.RunDirBusy: another process holds the directory.
        """
        self._dir.check_resume(self.saved_config, record,
                               allow_config_change)
        self._dir.lock()
        newest = self.newest_step()
        if newest is not None and newest > total_train_steps:
            raise ValueError(
                f'{self._checkpointer.candidates()[0]} is past the end of '
                'this run (train_eval.num_iterations is lower than when it '
                'was saved); keep num_iterations or use another root_dir.')
        resume = {}

        def apply(saved: Dict) -> None:
            # Inside the restore: an error here falls back to an older
            # checkpoint, as a damaged file does.
            streams = saved.pop('streams')
            resume['record'] = saved.pop('resume', None)
            restored = RunState(**saved)
            restore_streams(streams)
            vars(state).update(vars(restored))

        restored = self._checkpointer.restore(replay, apply)
        if restored is None:
            return Opened(None, self._dir.prepare_fresh_start(), None)
        return Opened(restored[0], [], resume['record'])

    def save(self, step: int, state: RunState, streams: Dict, config: Dict,
             replay, resume: Dict) -> None:
        """Writes checkpoint `ckpt-<step>` (atomically).

        Raises:
            checkpoints.CheckpointWriteError: it could not be written; the
                earlier checkpoints are intact.
        """
        self._checkpointer.save(
            step, dict(dataclasses.asdict(state), streams=streams), config,
            replay, resume)
        self._dir.checkpoint_written()

    def close(self) -> None:
        """Releases the lock."""
        self._dir.unlock()

    def resume_record(self, loop_state: Optional[Dict], envs: Sequence,
                      plasticity_state: Dict, env_name: str) -> Dict:
        """A checkpoint's `resume.json`: the loop's state (None: this loop
        does not continue its episodes), the environments' states when it
        does and they can be saved, and the plasticity meter's memory."""
        record = {'loop': env_state.encode(loop_state),
                  'plasticity': env_state.encode(plasticity_state)}
        if loop_state is None:
            record.update(envs=None, why_no_envs='this loop does not save '
                          'its episode in progress')
            return record
        try:
            record['envs'] = [env_state.capture(env) for env in envs]
        except env_state.UnsupportedEnvironment as error:
            record.update(envs=None, why_no_envs=(
                f'the environment state could not be saved ({error})'))
            if not self._env_state_warned:
                console.log(f'warning: cannot save the state of {env_name} '
                            f'({error}): a resume will cut the episode in '
                            'progress.')
                self._env_state_warned = True
        return record


def restore_episodes(record: Optional[Dict], envs: Sequence
                     ) -> Tuple[Optional[Dict], Optional[str]]:
    """Puts a checkpoint's environment states back.

    Returns:
        (the loop's saved state, None) when the episodes in progress
        continue; (None, why not) when they cannot (an older checkpoint,
        an environment whose state could not be saved or restored), and
        the loop starts new episodes.
    """
    if record is None:
        return None, 'the checkpoint holds no environment state'
    if record.get('envs') is None:
        return None, record.get('why_no_envs', 'no environment state saved')
    if len(record['envs']) != len(envs):
        return None, (f'it saved {len(record["envs"])} environments, this '
                      f'run has {len(envs)}')
    try:
        for env, saved in zip(envs, record['envs']):
            env_state.restore(env, saved)
        return env_state.decode(record['loop']), None
    except (env_state.UnsupportedEnvironment, KeyError, TypeError,
            ValueError) as error:
        return None, f'cannot restore the environment state ({error})'
