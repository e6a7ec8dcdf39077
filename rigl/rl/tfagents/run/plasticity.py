"""Plasticity metrics of a run's networks, measured at each evaluation.

On one batch (a replay sample off-policy, the last rollout's observations
on-policy), per network:

* `dormant_0`, `dormant_0.1`: the share of hidden neurons whose score
  (`neuron_scores`: mean |activation| over the batch, divided by the mean
  score of its layer; a conv layer's neurons are its feature maps) is
  <= tau (Sokar et al. 2023, ReDo): at tau = 0 the dead neurons;
* `active_units`: the share of hidden activations that are > 0;
* `effective_rank`: srank_0.01 of the penultimate features (Kumar et al.
  2021): the number of singular values holding 99% of their sum;
* `grad_norm`: the global norm of the network's training-loss gradient
  (where the algorithm names the loss: off-policy agents);
* `weight_change`: the norm of its parameters' change since the last
  measurement (0 at the first);
* the training-step hooks' own counts (e.g. ReDo's `recycled_neurons`).

Measuring draws from its own random streams: it never advances the
training's action sampling or ANF noise streams, so a run with and without
measurements trains identically.
"""

import contextlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.sparsity import compressed

TAUS = (0.0, 0.1)
RANK_DELTA = 0.01
BATCH_SIZE = 256


def hidden_features(network: tf.keras.layers.Layer, inputs,
                    flatten: bool = True) -> List[tf.Tensor]:
    """The outputs of a network's hidden kernel layers (all but the output
    layer) on `inputs`, in forward order, by applying its layers in turn
    up to the last hidden one; [batch, features] if `flatten`, else as
    the layers give them (a conv layer's [batch, height, width, maps])."""
    hidden = sparse_layers.kernel_layers(network)[:-1]
    features = []
    outputs = inputs
    for layer in network.layers:
        if len(features) == len(hidden):
            break
        outputs = layer(outputs, training=False) if isinstance(
            layer, tf.keras.layers.Layer) else layer(outputs)
        if any(layer is h for h in hidden):
            features.append(_flat(outputs) if flatten else outputs)
    return features


def _flat(features: tf.Tensor) -> tf.Tensor:
    return tf.reshape(features, [tf.shape(features)[0], -1])


def neuron_scores(features: tf.Tensor) -> tf.Tensor:
    """ReDo's score of each neuron of a layer (Sokar et al. 2023): its mean
    |activation| over the batch (and, for a conv layer's feature map, over
    its positions), divided by the mean score of the layer's neurons (0 in
    a layer where all are 0). A neuron is tau-dormant when its score is
    <= tau. Graph-friendly: ReDo computes it inside the train step.

    Args:
        features: a layer's activations, neurons on the last axis.

    Returns:
        [neurons] scores.
    """
    axes = list(range(features.shape.rank - 1))
    score = tf.reduce_mean(tf.abs(features), axis=axes)
    return tf.math.divide_no_nan(score, tf.reduce_mean(score))


def dormant_fraction(features: Sequence[tf.Tensor], tau: float) -> float:
    """Share of the neurons of all `features` layers whose
    `neuron_scores` are <= tau."""
    dormant = total = 0
    for layer_features in features:
        score = neuron_scores(layer_features).numpy()
        dormant += int(np.sum(score <= tau))
        total += score.size
    return dormant / total if total else 0.0


def effective_rank(features: tf.Tensor, delta: float = RANK_DELTA) -> int:
    """srank_delta: the fewest singular values whose sum reaches (1 - delta)
    of the total."""
    singular = np.linalg.svd(features.numpy().astype(np.float64),
                             compute_uv=False)
    if singular.sum() <= 0:
        return 0
    cumulative = np.cumsum(singular) / singular.sum()
    return int(np.searchsorted(cumulative, 1.0 - delta) + 1)


def _flat_weights(network) -> np.ndarray:
    return np.concatenate([v.numpy().ravel()
                           for v in network.trainable_variables])


class PlasticityMeter:
    """Measures `algorithm`'s networks; keeps their weights between calls.

    Args:
        algorithm: a built algorithm (`algos.base.Algorithm`).
        seed: seed of the measurement's own random streams.
    """

    def __init__(self, algorithm, seed: int):
        self._algorithm = algorithm
        self._seed = seed
        self._previous: Dict[str, np.ndarray] = {}
        self._calls = 0

    def state(self) -> Dict:
        """What the next measurement depends on: the number of calls (its
        streams' seeds) and each network's weights at the last call."""
        return {'calls': self._calls, 'previous': dict(self._previous)}

    def set_state(self, state: Dict) -> None:
        """Restores `state()` (a resumed run measures as the original)."""
        self._calls = int(state['calls'])
        self._previous = dict(state['previous'])

    @contextlib.contextmanager
    def _own_streams(self):
        """Swaps the training's random generators (action sampling, ANF
        noise) for streams of the meter's own while measuring."""
        self._calls += 1
        holders = [(self._algorithm.agent, 'sample_rng'),
                   (self._algorithm.noise_layout, 'rng')]
        saved = []
        for index, (holder, name) in enumerate(holders):
            if holder is not None and hasattr(holder, name):
                saved.append((holder, name, getattr(holder, name)))
                setattr(holder, name, tf.random.Generator.from_seed(
                    self._seed + 7919 * self._calls + index))
        try:
            yield
        finally:
            for holder, name, generator in saved:
                setattr(holder, name, generator)

    def measure(self, batch: Optional[Dict]) -> Dict[str, Dict[str, float]]:
        """{network: {metric: value}} on `batch` (replay fields, or just
        'observation'); {} without a batch."""
        if batch is None:
            return {}
        algorithm = self._algorithm
        with self._own_streams():
            inputs = algorithm.plasticity_inputs(batch)
            grad_norms = self._grad_norms(batch)
            metrics = {}
            for name, network in algorithm.networks.items():
                features = hidden_features(network, inputs[name],
                                           flatten=False)
                weights = _flat_weights(network)
                previous = self._previous.get(name)
                row = {f'dormant_{tau:g}': dormant_fraction(features, tau)
                       for tau in TAUS}
                row['active_units'] = float(np.mean(
                    [np.mean(f.numpy() > 0) for f in features])) if (
                        features) else 0.0
                row['effective_rank'] = (effective_rank(_flat(features[-1]))
                                         if features else 0)
                if name in grad_norms:
                    row['grad_norm'] = grad_norms[name]
                row['weight_change'] = float(np.linalg.norm(
                    weights - previous)) if previous is not None else 0.0
                self._previous[name] = weights
                metrics[name] = row
            for hook in getattr(algorithm, 'train_hooks', {}).values():
                for name, values in hook.network_metrics().items():
                    metrics.setdefault(name, {}).update(values)
        return metrics

    def _grad_norms(self, batch) -> Dict[str, float]:
        norms = {}
        for names, loss_fn in self._algorithm.network_losses(batch):
            variables = [v for name in names for v in
                         self._algorithm.networks[name].trainable_variables]
            with compressed.no_capture(), tf.GradientTape(
                    watch_accessed_variables=False) as tape:
                tape.watch(variables)
                loss = loss_fn()
            grads = tape.gradient(loss, variables)
            for name in names:
                own = [g for g, v in zip(grads, variables) if g is not None
                       and any(v is w for w in self._algorithm.networks[
                           name].trainable_variables)]
                norms[name] = float(tf.linalg.global_norm(own)) if own else 0.0
        return norms


def sample_batch(replay, rng: np.random.Generator) -> Optional[Dict]:
    """A measurement batch from a replay buffer (None while it is empty)."""
    if replay is None or replay.size == 0:
        return None
    return replay.sample(min(BATCH_SIZE, replay.size), rng)
