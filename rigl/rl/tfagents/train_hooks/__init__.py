"""Training-step hooks: code that runs in every compiled train step, after
the agent's optimizer steps (and mask updates), on that step's batch.

A hook is one module with one registered `TrainStepHook` subclass and the
gin configurable that says whether it is on (ReDo: `train_hooks.redo`,
`redo.every`). The algorithm (`algos.base`):

1. calls every registered hook's configurable when it is built, so each
   hook's settings, off ones included, are in the run's record;
2. binds the hooks that are on to its networks and optimizers once they
   exist (`build`) and runs them after each train step
   (`after_train_step`);
3. checkpoints their state and writes their summaries; the plasticity
   metrics add their per-network counts to each evaluation's results row.

A new hook is one module plus its registration: the `register` decorator
on its class and its import at the end of this file.
"""

from typing import Any, Dict, Iterable, Optional, Type

import tensorflow as tf

from rigl.rl.tfagents.run import console

# name -> TrainStepHook subclass (see `register`).
HOOKS: Dict[str, Type['TrainStepHook']] = {}


def register(name: str):
    """Class decorator: makes a `TrainStepHook` subclass the hook `name`."""
    def add(cls):
        if name in HOOKS:
            raise ValueError(f'train-step hook {name!r} is registered twice.')
        cls.hook_name = name
        HOOKS[name] = cls
        return cls
    return add


class TrainStepHook(tf.Module):
    """A hook bound to a built algorithm; its variables are checkpointed.

    Subclasses implement `configure`, `record_of`, `__init__(config,
    algorithm)` and `after_train_step`, and may override `describe`,
    `write_summaries` and `network_metrics`.
    """

    hook_name = ''

    @classmethod
    def configure(cls, algorithm_class) -> Optional[Any]:
        """The hook's settings from gin (calling its configurable), or None
        when it is off.

        Raises:
            ValueError: a bad setting, or an algorithm it cannot serve.
        """
        raise NotImplementedError

    @classmethod
    def record_of(cls, values: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The hook's settings from a run's flat {binding: value} record
        (`run_dir.config_record`), None when it was off."""
        raise NotImplementedError

    def after_train_step(self, batch: Dict[str, tf.Tensor]) -> tf.Operation:
        """Runs (in graph) after a train step on `batch` (replay fields)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One console line."""
        return self.hook_name

    def write_summaries(self) -> None:
        """Training summaries (inside the writer's step scope)."""

    def network_metrics(self) -> Dict[str, Dict[str, float]]:
        """{network: {metric: value}} for each evaluation's results row."""
        return {}


def configure(algorithm_class) -> Dict[str, Any]:
    """{name: settings} of the hooks that are on (every registered hook's
    configurable is called, so its settings are recorded)."""
    configs = {}
    for name, cls in HOOKS.items():
        config = cls.configure(algorithm_class)
        if config is not None:
            configs[name] = config
    return configs


def build(configs: Dict[str, Any], algorithm) -> Dict[str, TrainStepHook]:
    """The hooks of `configs` bound to a built algorithm (printed)."""
    hooks = {}
    for name, config in configs.items():
        hooks[name] = HOOKS[name](config, algorithm)
        console.log(hooks[name].describe())
    return hooks


def after_train_step(hooks: Iterable[TrainStepHook],
                     batch: Dict[str, tf.Tensor], outputs):
    """`outputs` (a train step's loss info) once every hook has run after
    the step that produced it, in registration order."""
    hooks = list(hooks)
    if not hooks:
        return outputs
    done = tf.nest.flatten(outputs)
    for hook in hooks:
        with tf.control_dependencies(done):
            done = [hook.after_train_step(batch)]
    with tf.control_dependencies(done):
        return tf.nest.map_structure(tf.identity, outputs)


def records(values: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """{name: settings} of the hooks that were on in a run's record."""
    found = {}
    for name, cls in HOOKS.items():
        record = cls.record_of(values)
        if record is not None:
            found[name] = record
    return found


# The built-in hooks (each registers itself on import).
from rigl.rl.tfagents.train_hooks import redo  # noqa: E402,F401
