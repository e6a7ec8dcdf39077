"""Atomic checkpoints with fallback.

Each checkpoint is written to `checkpoints/ckpt-<step>.tmp/` (TF objects,
replay data, run state, the run's config and, in `resume.json`, what a
resume needs to continue the episodes in progress), then renamed into
place, then `latest` is replaced atomically. Restoring tries the newest
complete checkpoint first and falls back to older ones when one cannot be
read, so a truncated file, a missing index or a bad `latest` pointer loses
at most one checkpoint interval. The newest `keep` (>= 2) checkpoints are
kept.
"""

import errno
import json
import os
import shutil
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from rigl.rl import layout
from rigl.rl.layout import CHECKPOINT_CONFIG_FILE as CONFIG_FILE
from rigl.rl.layout import CHECKPOINT_STATE_FILE as STATE_FILE
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run.replay import IncompatibleReplay, ReplayBuffer

# The environments' states and the loop's episode in progress (absent from
# checkpoints written before they were saved).
RESUME_FILE = 'resume.json'


def write_atomically(path: str, text: str) -> None:
    """Writes `text` to `path` so a crash leaves the old or the new file."""
    staging = path + '.tmp'
    with open(staging, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, path)


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    text = text[0] if text else type(error).__name__
    return text if len(text) <= limit else text[:limit] + '...'


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the earlier ones are intact."""


class Checkpointer:
    """Saves and restores TF objects, replay data and JSON run state."""

    def __init__(self, root_dir: str, keep: int = 2, **trackables):
        self.directory = layout.checkpoints_dir(root_dir)
        self._checkpoint = tf.train.Checkpoint(**trackables)
        self._keep = max(2, keep)

    @staticmethod
    def step_of(path: str) -> int:
        return int(os.path.basename(path)[len('ckpt-'):])

    def candidates(self) -> List[str]:
        """Complete checkpoint directories, newest first."""
        if not os.path.isdir(self.directory):
            return []
        steps = []
        for name in os.listdir(self.directory):
            if name.startswith('ckpt-') and not name.endswith('.tmp'):
                try:
                    steps.append(int(name[len('ckpt-'):]))
                except ValueError:
                    continue
        return [os.path.join(self.directory, f'ckpt-{step}')
                for step in sorted(steps, reverse=True)]

    @staticmethod
    def read_config(path: str) -> Optional[Dict]:
        try:
            with open(os.path.join(path, CONFIG_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def save(self, step: int, state: Dict, config: Dict,
             replay: Optional[ReplayBuffer] = None,
             resume: Optional[Dict] = None) -> str:
        """Writes checkpoint `ckpt-<step>` atomically; returns its path.

        `resume` (JSON-ready) goes to `resume.json`; a restore hands it
        back as the run state's 'resume' entry.

        Raises:
            CheckpointWriteError: when it cannot be written (e.g. a full
                disk); the staging directory is removed and the earlier
                checkpoints are left as they were.
        """
        name = f'ckpt-{step}'
        final = os.path.join(self.directory, name)
        staging = final + '.tmp'
        try:
            os.makedirs(self.directory, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            os.makedirs(staging)
            self._checkpoint.write(os.path.join(staging, 'tf'))
            if replay is not None:
                replay.save(os.path.join(staging,
                                         layout.CHECKPOINT_REPLAY_FILE))
            for file_name, content in ((STATE_FILE, state),
                                       (CONFIG_FILE, config),
                                       (RESUME_FILE, resume)):
                if content is None:
                    continue
                with open(os.path.join(staging, file_name), 'w') as f:
                    json.dump(content, f)
        except (OSError, tf.errors.OpError) as error:
            shutil.rmtree(staging, ignore_errors=True)
            previous = self.candidates()[:1]
            kept = (f'the previous checkpoint {previous[0]} is intact'
                    if previous else 'no earlier checkpoint exists')
            full = (isinstance(error, tf.errors.ResourceExhaustedError) or
                    getattr(error, 'errno', None) == errno.ENOSPC)
            advice = ('free disk space and rerun' if full else 'rerun')
            raise CheckpointWriteError(
                f'cannot write checkpoint {final} ({_first_line(error)}); '
                f'{kept}: {advice} the same command to resume.') from None
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        try:
            write_atomically(os.path.join(
                self.directory, layout.LATEST_CHECKPOINT_FILE), name)
        except OSError as error:
            # A restore looks for complete ckpt-<step> directories; `latest`
            # is only a pointer for people.
            console.log(f'warning: cannot update {self.directory}/latest '
                        f'({_first_line(error)}); {final} is complete.')
            try:
                os.remove(os.path.join(self.directory, 'latest.tmp'))
            except OSError:
                pass
        for old in self.candidates()[self._keep:]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _restore_one(self, path: str, replay: Optional[ReplayBuffer]) -> Dict:
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
        if os.path.exists(os.path.join(path, RESUME_FILE)):
            with open(os.path.join(path, RESUME_FILE)) as f:
                state['resume'] = json.load(f)
        status = self._checkpoint.read(os.path.join(path, 'tf'))
        try:
            status.assert_existing_objects_matched()
        except AssertionError:
            status.expect_partial()  # no per-variable warning flood
            raise
        if replay is not None:
            replay.load(os.path.join(path, layout.CHECKPOINT_REPLAY_FILE))
        return state

    def restore(self, replay: Optional[ReplayBuffer] = None,
                on_restored: Optional[Callable[[Dict], None]] = None
                ) -> Optional[Tuple[str, Dict]]:
        """Restores the newest readable checkpoint.

        Returns:
            (path, run state), or None when there is no checkpoint.

        Raises:
            ValueError: when checkpoints exist but none can be restored (e.g.
                the networks no longer match), with the newest one's error,
                or when the replay buffer cannot hold the saved data (no
                fallback: an older checkpoint would silently lose progress).
        """
        errors = []
        for path in self.candidates():
            try:
                state = self._restore_one(path, replay)
                if on_restored is not None:
                    on_restored(state)
            except IncompatibleReplay as error:
                raise ValueError(
                    f'cannot resume from {path}: {error}') from None
            except Exception as error:  # pylint: disable=broad-except
                errors.append((path, error))
                console.log(f'warning: cannot restore {path} '
                            f'({_first_line(error)}); trying an older one.')
                continue
            return path, state
        if errors:
            path, error = errors[0]
            raise ValueError(
                f'none of the {len(errors)} checkpoints in {self.directory} '
                f'can be restored into this run; newest ({path}): '
                f'{_first_line(error)}')
        return None
