r"""Per-feature observation histograms for ANF's histogram noise features.

  python -m rigl.rl.make_histograms --env_name=HalfCheetah-v5 \
    --steps=20000 --bins=50 --output=data/halfcheetah_v5_histograms.npz \
    [--policy_dir=RUN/policy]

Runs the environment (random actions, or a saved policy's greedy actions
with --policy_dir, which gives the states a trained agent visits), then
writes per real feature the bin edges and probabilities that
`noise_features.histogram_file` reads (with
`noise_features.distribution = 'histogram'`).
"""

import sys

from absl import app
from absl import flags

import rigl  # noqa: F401  (before TensorFlow: picks the Keras)
import numpy as np

from rigl.rl.tfagents import anf
from rigl.rl.tfagents import envs

FLAGS = flags.FLAGS
flags.DEFINE_string('env_name', 'HalfCheetah-v5', 'Gymnasium id.')
flags.DEFINE_integer('steps', 20000, 'Environment steps to record.')
flags.DEFINE_integer('bins', 50, 'Equal-width bins per feature.')
flags.DEFINE_string('output', None, 'Where to write the .npz file.')
flags.DEFINE_string('policy_dir', None, 'A saved policy to act with '
                    '(default: uniform random actions).')
flags.DEFINE_integer('seed', 0, 'Seed of the environment and actions.')
flags.mark_flag_as_required('output')


def record_observations(env_name: str, steps: int, seed: int,
                        policy_dir: str = None) -> np.ndarray:
    """[steps, features] observations of random or policy rollouts."""
    env = envs.create_environment(env_name, seed=seed, evaluation=True)
    rng = np.random.default_rng(seed)
    spec = env.action_spec()
    act = None
    if policy_dir:
        # Only a saved policy needs TensorFlow (and TFP, for its ops).
        # pylint: disable=import-outside-toplevel,unused-import
        import tensorflow as tf
        from tf_agents.trajectories import time_step as ts
        import tensorflow_probability  # noqa: F401
        # pylint: enable=import-outside-toplevel,unused-import
        policy = tf.saved_model.load(policy_dir)
        act = lambda o: policy.action(ts.restart(  # noqa: E731
            tf.constant(o[None]), batch_size=1)).action.numpy()[0]
    observations = []
    time_step = env.reset()
    while len(observations) < steps:
        observations.append(time_step.observation)
        action = act(time_step.observation) if act else rng.uniform(
            spec.minimum, spec.maximum, spec.shape).astype(spec.dtype)
        time_step = env.step(action)
        if time_step.is_last():
            time_step = env.reset()
    return np.stack(observations)


def main(_) -> None:
    if FLAGS.steps < 1 or FLAGS.bins < 1:
        print('error: --steps and --bins must be positive integers.',
              file=sys.stderr)
        sys.exit(2)
    try:
        observations = record_observations(FLAGS.env_name, FLAGS.steps,
                                           FLAGS.seed, FLAGS.policy_dir)
        edges, probabilities = anf.make_feature_histograms(observations,
                                                           FLAGS.bins)
        path = anf.save_feature_histograms(FLAGS.output, edges,
                                           probabilities)
    except (ValueError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        sys.exit(2)
    print(f'wrote {path}: {edges.shape[0]} features x {FLAGS.bins} bins from '
          f'{len(observations)} steps of {FLAGS.env_name}')


if __name__ == '__main__':
    app.run(main)
