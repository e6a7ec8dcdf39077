"""The learner and actor loops of a distributed (Reverb) off-policy run.

    learner: push the policy variables
             repeat num_iterations times:
                 sample a batch from the replay table (the rate limiter
                 holds the learner at samples_per_insert)
                 one train step
                 push the policy variables every push_period steps
                 summaries, progress, evaluation, checkpoint (the Reverb
                 server's, then the learner's) when due
             push once more: actors see the last train step and stop

    actor:   pull the policy variables (kernels, biases, masks, train step)
             repeat:
                 act (random until the learner trains, for the actor's share
                 of the initial collection), step, insert the transition
                 pull every pull_period env steps; stop when the learner is
                 done

Actors need no sparsity code: masks are policy variables and masked kernels
are exactly zero. Everything around the learner's loop (resume, results,
checkpoints, evaluation) is the single-process `Session`.
"""

import dataclasses
import glob
import json
import math
import os
import time
from typing import Dict, List

import gin
import numpy as np
import tensorflow as tf
from tf_agents.experimental.distributed import reverb_variable_container

from rigl.rl import layout
from rigl.rl.tfagents import envs
from rigl.rl.tfagents.loops.session import Session
from rigl.rl.tfagents.run import checkpoints
from rigl.rl.tfagents.run import console
from rigl.rl.tfagents.run import n_step
from rigl.rl.tfagents.run import reverb_replay
from rigl.rl.tfagents.run import seeding
from rigl.rl.tfagents.run import summaries



@dataclasses.dataclass(frozen=True)
class Options:
    """How the processes of a distributed run work together.

    Attributes:
        address: the Reverb server, HOST:PORT.
        num_actors: actors sharing the initial random collection.
        push_period: learner train steps between variable pushes.
        pull_period: actor env steps between variable pulls.
        connect_timeout: seconds to wait for the server to answer before
            giving up with an error.
    """
    address: str
    num_actors: int = 1
    push_period: int = 100
    pull_period: int = 100
    connect_timeout: float = 60.0


def check_supported(algorithm) -> None:
    """Refuses what a distributed run cannot do the way the single-process
    loop does it."""
    if algorithm.loop != 'off_policy':
        raise ValueError(f'distributed training is for the off-policy agents '
                         f'(sac, td3, dqn); {algorithm.name} is on-policy.')
    if algorithm.settings.env_name.startswith('ALE/'):
        raise ValueError('distributed runs store whole stacked observations '
                         'per transition; Atari (ALE/...) is not supported '
                         'yet: use dqn_train_eval.py, whose replay stores '
                         'each frame once.')
    for name in ('n_step_delay', 'replay_check_interval'):
        if getattr(algorithm.settings, name, 0):
            raise ValueError(
                f'train_eval.{name} needs the single-process replay (RLx2: '
                'n-step targets formed when sampling, a dynamic capacity); '
                'distributed runs store fixed n-step transitions in Reverb. '
                f'Set it to 0, or train with {algorithm.name}_train_eval.py.')
    layout = algorithm.noise_layout
    try:
        env_redraws = gin.query_parameter(
            'create_environment.adjust_env_period')
    except ValueError:  # not bound
        env_redraws = None
    if env_redraws or (layout is not None and layout.config.adjust_period):
        raise ValueError('noise feature redraws (adjust_env_period, '
                         'adjust_period) are not supported in distributed '
                         'runs: each actor would draw its own.')


def learn(session: Session, options: Options) -> Dict:
    """Trains from the Reverb server; returns the final metric."""
    algorithm, settings = session.algorithm, session.settings
    check_supported(algorithm)
    # Before the run directory is touched: an unreachable server is an
    # error, not a run that waits forever.
    client = reverb_replay.connect(options.address, options.connect_timeout)
    session.start()
    container = reverb_variable_container.ReverbVariableContainer(
        options.address, table_names=[reverb_replay.VARIABLES_TABLE])
    variables = reverb_replay.policy_variables(algorithm)
    container.push(variables)
    iterator = iter(reverb_replay.batched_dataset(options.address,
                                                  settings.batch_size))
    state = session.state
    step = session.step
    stats = reverb_replay.table_stats(client)
    console.log(f'learner: replay at {options.address} holds {stats.size:,} '
                f'transitions; training waits for '
                f'{settings.initial_collect_steps:,}.')
    progress = console.Progress(settings.num_iterations, step)
    flops_per_step = algorithm.training_flops()
    snr_freq = summaries.log_snr()
    last_inserts, last_time = stats.inserts, time.time()

    def sync_env_steps() -> reverb_replay.TableStats:
        current = reverb_replay.table_stats(client)
        state.env_steps = current.inserts
        return current

    while step < settings.num_iterations:
        batch = next(iterator)
        loss_info = algorithm.train(batch)
        step += 1
        state.train_flops += flops_per_step
        if step % options.push_period == 0:
            container.push(variables)
        if step % settings.summary_interval == 0:
            session.write_train_summaries(loss_info, progress.steps_per_second)
        if snr_freq and step % snr_freq == 0:
            session.write_snr(batch)
        if step % settings.log_interval == 0:
            current = sync_env_steps()
            now = time.time()
            env_rate = (current.inserts - last_inserts) / max(
                now - last_time, 1e-9)
            last_inserts, last_time = current.inserts, now
            console.log(progress.line(
                step, actor_returns(session.root_dir),
                extra=f'env steps {current.inserts:,} '
                      f'({env_rate:.1f}/s) | '))
        last = step == settings.num_iterations
        if step % settings.eval_interval == 0 or last:
            sync_env_steps()
            session.evaluate()
            flops_per_step = algorithm.training_flops()
        if step % settings.checkpoint_interval == 0 or last:
            sync_env_steps()
            # Reverb's tables first: a learner checkpoint then always has
            # replay data at least as new (Reverb keeps its newest).
            client.checkpoint()
            session.checkpoint()
    container.push(variables)
    final = reverb_replay.table_stats(client)
    checkpoints.write_atomically(
        os.path.join(session.root_dir, layout.DISTRIBUTED_STATS_FILE),
        json.dumps(dict(
            train_steps=step, batch_size=settings.batch_size,
            samples=final.samples, inserts=final.inserts,
            samples_per_insert=final.samples_per_insert,
            actors=actor_stats(session.root_dir)), indent=2))
    return session.finish()


def actor_stats(root_dir: str) -> Dict[str, Dict]:
    """Every actor's last written counters, by actor directory name."""
    found = {}
    for path in sorted(glob.glob(os.path.join(
            root_dir, layout.ACTORS_DIR, '*', layout.ACTOR_STATS_FILE))):
        try:
            with open(path) as f:
                found[os.path.basename(os.path.dirname(path))] = json.load(f)
        except (OSError, ValueError):
            continue
    return found


def actor_returns(root_dir: str) -> List[float]:
    """The actors' latest episode returns (what the learner's progress
    line shows: it steps no environment itself)."""
    returns = []
    for stats in actor_stats(root_dir).values():
        returns.extend(stats.get('recent_returns', []))
    return returns[-10:]


def act(algorithm, settings, seed: int, index: int, attempt: int,
        options: Options, root_dir: str) -> int:
    """Collects for the learner until it has trained num_iterations steps;
    returns the env steps this actor took."""
    check_supported(algorithm)
    if not 0 <= index < options.num_actors:
        raise ValueError(f'--actor_index={index}: allowed 0..'
                         f'{options.num_actors - 1} (--num_actors='
                         f'{options.num_actors}).')
    client = reverb_replay.connect(options.address, options.connect_timeout)
    stream = ('actor', index, attempt)
    # The training env's feature layout (ANF noise and permutation), with
    # this actor's own environment stream.
    reference = envs.create_environment(
        env_name=settings.env_name, seed=seeding.derive(seed, 'env', 0))
    env = envs.create_environment(
        env_name=settings.env_name, seed=seeding.derive(seed, 'env', *stream),
        feature_layout_from=reference)
    reference.close()
    algorithm.agent.sample_rng.reset_from_seed(
        seeding.derive(seed, 'action', *stream))
    rng = np.random.default_rng(seeding.derive(seed, 'loop', *stream))
    container = reverb_variable_container.ReverbVariableContainer(
        options.address, table_names=[reverb_replay.VARIABLES_TABLE])
    variables = reverb_replay.policy_variables(algorithm)
    writer = reverb_replay.TransitionWriter(client)
    # n-step transitions are formed here, before they reach the table.
    transitions = n_step.NStepAccumulator(settings.n_step, settings.gamma,
                                          writer.add)
    directory = layout.actor_dir(root_dir, index)
    os.makedirs(directory, exist_ok=True)
    summary_writer = tf.summary.create_file_writer(directory)
    random_steps = math.ceil(settings.initial_collect_steps /
                             options.num_actors)
    counters = {'env_steps': 0, 'episodes': 0, 'recent_returns': [],
                'restarts': attempt, 'policy_train_step': 0}

    def pull() -> bool:
        """Pulls the newest variables; True once the learner is done."""
        container.update(variables)
        counters['policy_train_step'] = int(algorithm.train_step.numpy())
        return counters['policy_train_step'] >= settings.num_iterations

    def write_stats() -> None:
        counters['inserted'] = writer.inserted
        checkpoints.write_atomically(os.path.join(directory,
                                                  layout.ACTOR_STATS_FILE),
                                     json.dumps(counters))

    done = pull()
    console.log(f'actor {index}: collecting for {options.address} (learner '
                f'at train step {counters["policy_train_step"]}).')
    time_step = env.reset()
    episode_return, episode_length = 0.0, 0
    steps = 0
    while not done:
        if counters['policy_train_step'] == 0 and steps < random_steps:
            action = algorithm.random_action(rng)
        else:
            action = algorithm.act(time_step.observation[None]).numpy()
        next_step = env.step(action)
        transitions.add(time_step.observation, action, next_step.reward,
                        next_step.discount, next_step.observation)
        steps += 1
        episode_return += float(next_step.reward)
        episode_length += 1
        if next_step.is_last():
            transitions.end_episode()
            counters['episodes'] += 1
            counters['recent_returns'] = (counters['recent_returns'] +
                                          [episode_return])[-10:]
            with summary_writer.as_default():
                summaries.write_episode(counters['policy_train_step'],
                                        episode_return, episode_length)
            if settings.log_episodes:
                console.log(f'actor {index}: episode {counters["episodes"]} '
                            f'return {episode_return:.1f} length '
                            f'{episode_length} (env steps {steps:,})')
            episode_return, episode_length = 0.0, 0
            next_step = env.reset()
        time_step = next_step
        counters['env_steps'] = steps
        while not writer.wait(timeout_ms=2000) and not done:
            done = pull()  # held back by the rate limiter: is it over?
        if steps % options.pull_period == 0 and not done:
            done = pull()
            write_stats()
    write_stats()
    writer.close()
    env.close()
    console.log(f'actor {index}: the learner is done; {steps:,} env steps.')
    return steps
