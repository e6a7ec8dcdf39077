"""A training environment's full state, saved with each checkpoint.

A resumed run continues the episode in progress instead of starting a new
one, so that it writes the same results as a run that was never stopped.
`capture(env)` walks the environment from our TF-Agents adapter
(`envs.GymnasiumEnvironment`: its current time step and pending seed) down
through every gymnasium wrapper to the simulator, and returns a JSON-ready
record; `restore(env, record)` puts it back into a freshly built environment
of the same kind.

What is saved per layer:
  - our adapter: the current time step (TF-Agents' auto-reset reads it) and
    the seed of its next reset;
  - `anf.NoiseFeatures` (ANF): its noise stream, step count and
    permutation (`rng_state`);
  - every other gymnasium wrapper (time limit, order enforcing, env checker,
    Atari preprocessing, episodic life, frame stack, ...): each of its own
    attributes that holds data (numbers, arrays, frame queues, random
    generators); functions and spaces are configuration and are skipped;
  - classic control (`gymnasium.envs.classic_control`): the same data
    attributes (`state`, `last_u`, `steps_beyond_terminated`, ...) and the
    `np_random` bit generator;
  - MuJoCo (`MujocoEnv`): `np_random`, the integration state of
    `mujoco.mj_getState(mjSTATE_INTEGRATION)` (time, qpos, qvel, act,
    warm-start accelerations, controls, applied forces, ...) and the whole
    `MjData` as MuJoCo serialises it, so that quantities computed by the
    last step and read before the next (body positions, contacts) are the
    same too;
  - ALE (`AtariEnv`): `np_random` and `ale.cloneState(include_rng=True)`
    (emulator, sticky-action random stream, frame counters).

Anything else (another simulator, a wrapper holding an object we do not
know) raises `UnsupportedEnvironment`: the caller then falls back to
starting a new episode after a resume.
"""

import base64
import collections
import zlib
from typing import Any, Callable, Dict, List

import gymnasium
import numpy as np

from rigl.rl.tfagents import envs
from rigl.rl.tfagents.anf import env as anf_env

VERSION = 1

# Attributes of gymnasium wrappers and environments that describe, not
# hold, state (or are restored by a handler of their own).
_SKIPPED = frozenset((
    'env', '_action_space', '_observation_space', '_metadata', '_cached_spec',
    '_saved_kwargs', '_reward_range', 'action_space', 'observation_space',
    'spec', 'metadata', 'render_mode', 'screen', 'clock', 'isopen',
    '_ezpickle_args', '_ezpickle_kwargs', 'mujoco_renderer', 'model', 'data',
    'ale', '_action_set', 'observation_structure'))

# Data attributes that are options of the environment, not its state: a
# saved value must equal this environment's (else it was built differently,
# e.g. another time limit after `--allow_config_change`).
_OPTIONS = frozenset((
    '_max_episode_steps', 'noop_max', 'frame_skip', '_frameskip',
    'screen_size', 'terminal_on_life_loss', 'grayscale_obs', 'scale_obs',
    'stack_size', 'padding_type'))


class UnsupportedEnvironment(ValueError):
    """The environment's state cannot be saved (or a saved state does not
    fit this environment): a resume starts a new episode instead."""


def encode(value: Any) -> Any:
    """`value` as JSON-ready data that `decode` turns back exactly.

    Numbers, strings, None and booleans stay themselves (JSON keeps
    Python floats exactly); arrays, numpy scalars, bytes, tuples, deques and
    random generators become one-key dicts naming their kind.

    Raises:
        UnsupportedEnvironment: for any other type.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {'__array__': [value.dtype.str, list(value.shape),
                              _b64(np.ascontiguousarray(value).tobytes())]}
    if isinstance(value, np.generic):
        return {'__scalar__': [value.dtype.str, _b64(value.tobytes())]}
    if isinstance(value, bytes):
        return {'__bytes__': _b64(value)}
    if isinstance(value, np.random.Generator):
        return {'__generator__': [type(value.bit_generator).__name__,
                                  encode(value.bit_generator.state)]}
    if isinstance(value, collections.deque):
        return {'__deque__': [value.maxlen, [encode(v) for v in value]]}
    if isinstance(value, tuple):
        return {'__tuple__': [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {'__dict__': {k: encode(v) for k, v in value.items()}}
    raise UnsupportedEnvironment(f'cannot save a {type(value).__name__}')


def decode(value: Any) -> Any:
    """The inverse of `encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, content), = value.items()
    if kind == '__array__':
        dtype, shape, data = content
        return np.frombuffer(_unb64(data), np.dtype(dtype)).reshape(
            shape).copy()
    if kind == '__scalar__':
        dtype, data = content
        return np.frombuffer(_unb64(data), np.dtype(dtype))[0]
    if kind == '__bytes__':
        return _unb64(content)
    if kind == '__generator__':
        name, state = content
        generator = np.random.Generator(getattr(np.random, name)())
        generator.bit_generator.state = decode(state)
        return generator
    if kind == '__deque__':
        maxlen, items = content
        return collections.deque([decode(v) for v in items], maxlen)
    if kind == '__tuple__':
        return tuple(decode(v) for v in content)
    if kind == '__dict__':
        return {k: decode(v) for k, v in content.items()}
    raise UnsupportedEnvironment(f'unknown saved kind {kind!r}')


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode('ascii')


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode('ascii'))


def _data_attributes(layer: Any) -> Dict[str, Any]:
    """Every attribute of `layer` that holds data, encoded; functions and
    spaces are skipped.

    Raises:
        UnsupportedEnvironment: if an attribute holds an object of a type
            that cannot be saved (its state would be lost).
    """
    saved = {}
    for name, value in vars(layer).items():
        if name in _SKIPPED or callable(value) or isinstance(
                value, gymnasium.Space):
            continue
        try:
            saved[name] = encode(value)
        except UnsupportedEnvironment:
            raise UnsupportedEnvironment(
                f'{type(layer).__name__}.{name} holds a '
                f'{type(value).__name__}, whose state cannot be saved'
            ) from None
    return saved


def _layers(env: 'envs.GymnasiumEnvironment') -> List[Any]:
    """The gymnasium wrappers of `env`, outermost first, then the
    unwrapped environment."""
    layers, layer = [], env.gym_env
    while isinstance(layer, gymnasium.Wrapper):
        layers.append(layer)
        layer = layer.env
    return layers + [layer]


def _kind(layer: Any) -> str:
    """'mujoco', 'ale', 'classic_control' or 'wrapper' (else raises)."""
    if isinstance(layer, gymnasium.Wrapper):
        return 'wrapper'
    module = type(layer).__module__
    if module.startswith('gymnasium.envs.classic_control'):
        return 'classic_control'
    if hasattr(layer, 'model') and hasattr(layer, 'data') and (
            module.startswith('gymnasium.envs.mujoco')):
        return 'mujoco'
    if module.startswith('ale_py') and hasattr(layer, 'ale'):
        return 'ale'
    raise UnsupportedEnvironment(
        f'{type(layer).__module__}.{type(layer).__name__} is not a '
        'classic-control, MuJoCo or ALE environment, whose state this suite '
        'knows how to save')


def _type_name(layer: Any) -> str:
    """The layer's class as records name it; the noise wrapper keeps the
    name it had before it moved to `anf.env`, so that checkpoints of either
    version restore."""
    if isinstance(layer, anf_env.NoiseFeatures):
        return 'rigl.rl.tfagents.envs.NoiseFeatures'
    return f'{type(layer).__module__}.{type(layer).__name__}'


def _capture_layer(layer: Any) -> Dict:
    kind = _kind(layer)
    record = {'type': _type_name(layer), 'kind': kind}
    if isinstance(layer, anf_env.NoiseFeatures):
        record['noise'] = encode(layer.rng_state())
        return record
    record['attributes'] = _data_attributes(layer)
    if kind == 'mujoco':
        import mujoco  # pylint: disable=import-outside-toplevel
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(layer.model, spec), np.float64)
        mujoco.mj_getState(layer.model, layer.data, state, spec)
        record['mj_state'] = encode(state)
        record['mj_data'] = _b64(zlib.compress(layer.data.__getstate__()))
    elif kind == 'ale':
        ale_state = layer.ale.cloneState(include_rng=True)
        record['ale_state'] = encode(bytes(ale_state.serialize()))
    return record


def capture(env: 'envs.GymnasiumEnvironment') -> Dict:
    """The full state of training environment `env`, JSON-ready.

    Raises:
        UnsupportedEnvironment: if some layer's state cannot be saved.
    """
    if not isinstance(env, envs.GymnasiumEnvironment):
        raise UnsupportedEnvironment(
            f'{type(env).__name__} is not this suite\'s gymnasium adapter')
    adapter = {name: encode(value)
               for name, value in env.resume_state().items()}
    return {'version': VERSION, 'adapter': adapter,
            'layers': [_capture_layer(layer) for layer in _layers(env)]}


def _restorer(layer: Any, record: Dict) -> Callable[[], None]:
    """A function that restores `record` into `layer`; every check and
    decoding happens before it is returned."""
    if 'noise' in record:
        noise = decode(record['noise'])
        return lambda: layer.set_rng_state(noise)
    attributes = {name: decode(value)
                  for name, value in record['attributes'].items()}
    for name in _OPTIONS.intersection(attributes):
        if attributes[name] != getattr(layer, name, None):
            raise UnsupportedEnvironment(
                f'the saved environment has {type(layer).__name__}.{name} = '
                f'{attributes[name]!r}, this one '
                f'{getattr(layer, name, None)!r}')
    steps = [lambda: [setattr(layer, name, value)
                      for name, value in attributes.items()]]
    if record['kind'] == 'mujoco':
        steps.append(_mujoco_restorer(layer, record))
    elif record['kind'] == 'ale':
        import ale_py  # pylint: disable=import-outside-toplevel
        ale_state = ale_py.ALEState(decode(record['ale_state']))
        steps.append(lambda: layer.ale.restoreState(ale_state))
    return lambda: [step() for step in steps]


def _mujoco_restorer(layer: Any, record: Dict) -> Callable[[], None]:
    import mujoco  # pylint: disable=import-outside-toplevel
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = decode(record['mj_state'])
    if state.shape != (mujoco.mj_stateSize(layer.model, spec),):
        raise UnsupportedEnvironment(
            f'the saved MuJoCo state has {state.size} numbers, this model '
            f'needs {mujoco.mj_stateSize(layer.model, spec)}')
    # MuJoCo's own serialisation (what pickle uses, without pickle): it
    # builds a new MjData, so it goes into an unconstructed one.
    data = mujoco.MjData.__new__(mujoco.MjData)
    data.__setstate__(zlib.decompress(_unb64(record['mj_data'])))
    fields = ('qpos', 'qvel', 'act', 'ctrl', 'xpos', 'geom_xpos',
              'sensordata')
    if any(getattr(data, name).shape != getattr(layer.data, name).shape
           for name in fields):
        raise UnsupportedEnvironment(
            'the saved MuJoCo data belongs to another model')

    def apply() -> None:
        mujoco.mj_copyData(layer.data, layer.model, data)
        mujoco.mj_setState(layer.model, layer.data, state, spec)
    return apply


def restore(env: 'envs.GymnasiumEnvironment', record: Dict) -> None:
    """Puts `capture(env)`'s record back into `env` (a freshly built
    environment of the same id and options). Nothing changes unless every
    layer fits.

    Raises:
        UnsupportedEnvironment: if the record does not fit `env`.
    """
    if record.get('version') != VERSION:
        raise UnsupportedEnvironment(
            f'environment state version {record.get("version")}, this code '
            f'reads version {VERSION}')
    layers = _layers(env)
    saved_types = [saved.get('type') for saved in record['layers']]
    types = [_type_name(layer) for layer in layers]
    if saved_types != types:
        raise UnsupportedEnvironment(
            f'the saved environment is {" > ".join(map(str, saved_types))}, '
            f'this one {" > ".join(types)}')
    steps = [_restorer(layer, saved)
             for layer, saved in zip(layers, record['layers'])]
    adapter = {name: decode(value)
               for name, value in record['adapter'].items()}
    for step in steps:
        step()
    env.set_resume_state(adapter)
