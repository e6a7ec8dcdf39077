"""Evaluation: greedy episodes and plasticity measurements.

`Evaluator` is the part of a session that measures the agent, on its own
evaluation environment (the training environment's feature layout, its own
seed) so that evaluating never moves the training's random streams. It
plays `eval_episodes` whole greedy episodes through a `Collector` and
measures plasticity (`run.plasticity`: dormant units, effective rank,
weight change, ...) on a batch of training data. Its random streams (the
evaluation environment's and the plasticity batch sampler's) and the
plasticity meter's memory go into checkpoints, so a resumed run evaluates
exactly as an uninterrupted one.
"""

from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from rigl.rl.tfagents.algos.base import GraphCall
from rigl.rl.tfagents.loops.collector import Collector
from rigl.rl.tfagents.loops.collector import EpisodeStats
from rigl.rl.tfagents.run import plasticity
from rigl.rl.tfagents.run import seeding


def single_action_fn(policy) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled observation -> action function (one observation)."""
    action = GraphCall(tf.function(lambda observation: policy.action(
        ts.restart(observation, batch_size=1)).action[0], autograph=False))
    return lambda observation: action(observation[None]).numpy()


def evaluate(env, action_fn: Callable[[np.ndarray], np.ndarray],
             num_episodes: int) -> Dict:
    """Mean/std return and mean length of `num_episodes` episodes of `env`
    with `action_fn` (one observation -> one action)."""
    returns, lengths = [], []

    def episode_done(episode_return: float, length: int) -> None:
        returns.append(episode_return)
        lengths.append(length)

    stats = EpisodeStats(1, on_end=episode_done)
    Collector([env], [stats], reset_on_last=False).run_episodes(
        lambda observations: action_fn(observations[0])[None], num_episodes)
    return {'return_mean': float(np.mean(returns)),
            'return_std': float(np.std(returns)),
            'episode_length': float(np.mean(lengths))}


class Evaluator:
    """Greedy evaluation episodes and plasticity metrics of one run.

    Args:
        algorithm: the run's algorithm (its `eval_policy` is played).
        env: the evaluation environment.
        seed: the run's seed (the plasticity streams derive from it).
        num_episodes: episodes per evaluation.
    """

    def __init__(self, algorithm, env, seed: int, num_episodes: int):
        self.env = env
        self._num_episodes = num_episodes
        self._meter = plasticity.PlasticityMeter(
            algorithm, seeding.derive(seed, 'plasticity'))
        self._batch_rng = np.random.default_rng(
            seeding.derive(seed, 'plasticity_batch'))
        self._greedy_action = single_action_fn(algorithm.eval_policy)

    def play(self) -> Dict:
        """Plays the evaluation episodes; returns their statistics."""
        return evaluate(self.env, self._greedy_action, self._num_episodes)

    def measure_plasticity(self, batch: Optional[Dict] = None,
                           replay=None) -> Dict:
        """Plasticity metrics on `batch`, or on a sample of `replay` when
        no batch is given ({} without either)."""
        if batch is None:
            batch = plasticity.sample_batch(replay, self._batch_rng)
        return self._meter.measure(batch)

    def streams(self) -> Dict:
        """The random streams a checkpoint saves, by name."""
        return {'plasticity': self._batch_rng.bit_generator.state,
                'eval_env': self.env.rng_state()}

    def set_streams(self, streams: Dict) -> None:
        """Restores `streams()` (a checkpoint without the plasticity stream
        keeps the seeded one)."""
        self.env.set_rng_state(streams['eval_env'])
        if 'plasticity' in streams:
            self._batch_rng.bit_generator.state = streams['plasticity']

    def state(self) -> Dict:
        """The plasticity meter's memory (weights at the last call, ...)."""
        return self._meter.state()

    def set_state(self, state: Dict) -> None:
        self._meter.set_state(state)
