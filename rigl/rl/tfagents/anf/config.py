"""ANF noise-feature settings: one gin vocabulary, with the old names kept.

`noise_features.<name>` (gin) sets where the noise features come from and
what they look like; `NoiseConfig` holds one side's settings:

  where           'network' (ANF: every forward pass of every network draws
                  fresh noise; replay stores only the real observation) or
                  'env' (the environment appends the noise; replay stores it)
  fraction        fraction in [0, 1) of the input that is noise (0: none)
  distribution    'gaussian': N(0, std^2); 'histogram': noise feature i
                  imitates real feature i mod d through its histogram in
                  `histogram_file` (`python -m rigl.rl.make_histograms`)
  std, histogram_file
                  the two distributions' parameters
  permute         shuffle real and noise features with a fixed permutation
  adjust_period   redraw the permutation every N env steps (0: never;
                  implies `permute`)
  empty_buffer_on_change, refill_timesteps, refill_mode
                  network side only: at a redraw, empty the replay and
                  refill it with N steps of 'random' or 'policy' actions

The older names still work, as deprecated aliases of one side's setting:
`NetworkNoise.<name>` (`LEGACY_NETWORK`) of the network side's, and
`create_environment.<name>` (`LEGACY_ENV`) of the environment side's. A
bound `NetworkNoise` parameter overrides `noise_features` for the network
side; a `create_environment` noise argument does for the environment side
when it differs from its default (the environment is always made through
gin, so its defaults are in every run's record). Old bindings alone
behave, and are recorded, exactly as before `noise_features` existed.

`resolve(values)` turns such bindings (the gin config in force, or a run's
recorded config) into the (network side, environment side) settings.
"""

import dataclasses
import math
import numbers
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import gin

WHERE = ('network', 'env')
DISTRIBUTIONS = ('gaussian', 'histogram')
REFILL_MODES = ('random', 'policy')
NEW = 'noise_features'
# Old name -> `NoiseConfig` field, per side.
LEGACY_NETWORK = {'noise_fraction': 'fraction', 'noise_std': 'std',
                  'histogram_file': 'histogram_file', 'permute': 'permute',
                  'adjust_period': 'adjust_period',
                  'empty_buffer_on_change': 'empty_buffer_on_change',
                  'refill_timesteps': 'refill_timesteps',
                  'refill_mode': 'refill_mode'}
LEGACY_ENV = {'noise_fraction': 'fraction', 'noise_std': 'std',
              'noise_histogram_file': 'histogram_file',
              'permute_features': 'permute',
              'adjust_env_period': 'adjust_period'}
# `create_environment`'s defaults of its noise arguments.
ENV_DEFAULTS = {'noise_fraction': 0.0, 'noise_std': 1.0,
                'noise_histogram_file': None, 'permute_features': False,
                'adjust_env_period': None}


def check_seed(seed: Any, name: str = 'seed') -> None:
    """Raises ValueError unless `seed` is None or an integer >= 0."""
    if seed is not None and (isinstance(seed, bool) or
                             not isinstance(seed, numbers.Integral) or
                             seed < 0):
        raise ValueError(
            f'{name}={seed!r} is invalid: it must be None or an integer >= 0.')


def check_positive_int(value: Any, name: str) -> None:
    """Raises ValueError unless `value` is an integer > 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or
            value <= 0):
        raise ValueError(
            f'{name}={value!r} is invalid: it must be a positive integer or '
            'None.')


def check_fraction(value: Any, name: str = 'noise_fraction') -> None:
    """Raises ValueError unless `value` is a number in [0, 1)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or
            not 0.0 <= value < 1.0):
        raise ValueError(
            f'{name}={value!r} is invalid: it must be a number in [0, 1) (the '
            'fraction of observation features that are noise).')


def check_std(value: Any, name: str = 'noise_std') -> None:
    """Raises ValueError unless `value` is a finite number > 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or
            not math.isfinite(value) or value <= 0):
        raise ValueError(
            f'{name}={value!r} is invalid: it must be a finite number > 0.')


def check_path(value: Any, name: str) -> None:
    """Raises ValueError unless `value` is None or a path."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ValueError(
            f'{name}={value!r} is invalid: it must be None or a path.')


def _check_choice(value: Any, name: str, allowed: Tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f'{name}={value!r} is invalid: allowed are '
                         f'{", ".join(map(repr, allowed))}.')


def _check_count(value: Any, name: str) -> None:
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or
            value < 0):
        raise ValueError(
            f'{name}={value!r} is invalid: it must be an integer >= 0.')


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f'{name}={value!r} is invalid: it must be True or False.')


# How each `NoiseConfig` field is checked.
_CHECKS = {
    'where': lambda v, n: _check_choice(v, n, WHERE),
    'fraction': check_fraction,
    'distribution': lambda v, n: _check_choice(v, n, DISTRIBUTIONS),
    'std': check_std,
    'histogram_file': check_path,
    'permute': _check_bool,
    'adjust_period': _check_count,
    'empty_buffer_on_change': _check_bool,
    'refill_timesteps': _check_count,
    'refill_mode': lambda v, n: _check_choice(v, n, REFILL_MODES),
}


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """One side's noise features (fields: the `noise_features` bindings)."""
    where: str = 'network'
    fraction: float = 0.0
    distribution: str = 'gaussian'
    std: float = 1.0
    histogram_file: Optional[str] = None
    permute: bool = False
    adjust_period: int = 0
    empty_buffer_on_change: bool = False
    refill_timesteps: int = 0
    refill_mode: str = 'random'

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _CHECKS[field.name](getattr(self, field.name),
                                f'{NEW}.{field.name}')
        has_file = self.histogram_file is not None
        if has_file != (self.distribution == 'histogram'):
            raise ValueError(
                f"{NEW}.distribution={self.distribution!r} and "
                f"{NEW}.histogram_file={self.histogram_file!r}: histogram "
                "noise needs a file, and a file needs "
                f"{NEW}.distribution='histogram'.")
        if self.where == 'env' and (self.empty_buffer_on_change or
                                    self.refill_timesteps):
            raise ValueError(
                f"{NEW}.empty_buffer_on_change and {NEW}.refill_timesteps "
                f"need {NEW}.where='network' (the environment redraws its "
                'permutation itself).')

    @property
    def enabled(self) -> bool:
        """Whether this side changes the input at all."""
        return bool(self.fraction or self.histogram_file or self.permute or
                    self.adjust_period)

    @property
    def permuted(self) -> bool:
        """Whether the features are shuffled (a redraw period implies it)."""
        return self.permute or self.adjust_period > 0


@gin.configurable(NEW)
def noise_features(where: str = 'network', fraction: float = 0.0,
                   distribution: str = 'gaussian', std: float = 1.0,
                   histogram_file: Optional[str] = None,
                   permute: bool = False, adjust_period: int = 0,
                   empty_buffer_on_change: bool = False,
                   refill_timesteps: int = 0,
                   refill_mode: str = 'random') -> NoiseConfig:
    """The `noise_features.*` bindings as a checked `NoiseConfig`."""
    return NoiseConfig(where, fraction, distribution, std, histogram_file,
                       permute, adjust_period, empty_buffer_on_change,
                       refill_timesteps, refill_mode)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class NetworkNoise:
    """Deprecated: the network side's settings under their old gin names
    (`NetworkNoise.<name>`); use `noise_features.*`."""
    noise_fraction: float = 0.0
    noise_std: float = 1.0
    histogram_file: Optional[str] = None
    permute: bool = False
    adjust_period: int = 0
    empty_buffer_on_change: bool = False
    refill_timesteps: int = 0
    refill_mode: str = 'random'

    def __post_init__(self):
        for old, field in LEGACY_NETWORK.items():
            _CHECKS[field](getattr(self, old), f'NetworkNoise.{old}')

    @property
    def enabled(self) -> bool:
        return self.as_config().enabled

    def as_config(self) -> NoiseConfig:
        """The same settings in the new vocabulary."""
        return NoiseConfig(where='network', **_translate(
            {old: getattr(self, old) for old in LEGACY_NETWORK},
            LEGACY_NETWORK, 'NetworkNoise.'))


def _translate(values: Mapping[str, Any], names: Mapping[str, str],
               prefix: str) -> Dict[str, Any]:
    """Old-name values -> `NoiseConfig` fields, each checked under its old
    name (an unset redraw period, None, becomes 0; a histogram file sets
    the distribution)."""
    fields = {}
    for old, value in values.items():
        field = names[old]
        if field == 'adjust_period' and value is None:
            value = 0
        _CHECKS[field](value, prefix + old)
        if field == 'histogram_file':
            fields['distribution'] = ('gaussian' if value is None else
                                      'histogram')
        fields[field] = value
    return fields


def _side(where: str, new: Optional[NoiseConfig],
          overrides: Dict[str, Any]) -> Optional[NoiseConfig]:
    """One side: the new vocabulary's settings if they are for this side
    (else the defaults) with the old bindings' overrides; None if off."""
    base = new if new is not None and new.where == where else NoiseConfig(
        where=where)
    config = dataclasses.replace(base, **overrides) if overrides else base
    return config if config.enabled else None


def resolve(values: Mapping[str, Any]
            ) -> Tuple[Optional[NoiseConfig], Optional[NoiseConfig]]:
    """(network side, environment side) of `values`, the bindings as
    {'configurable.name': value}: a run's recorded config, or the gin
    config in force. None for a side without noise features.

    Raises:
        ValueError: naming a binding with a bad value.
    """
    prefix = NEW + '.'
    new_values = {key[len(prefix):]: value for key, value in values.items()
                  if key.startswith(prefix)}
    new = NoiseConfig(**new_values) if new_values else None
    network = {old: values[f'NetworkNoise.{old}'] for old in LEGACY_NETWORK
               if f'NetworkNoise.{old}' in values}
    env = {old: values[f'create_environment.{old}'] for old in LEGACY_ENV
           if values.get(f'create_environment.{old}',
                         ENV_DEFAULTS[old]) != ENV_DEFAULTS[old]}
    return (_side('network', new, _translate(network, LEGACY_NETWORK,
                                             'NetworkNoise.')),
            _side('env', new, _translate(env, LEGACY_ENV,
                                         'create_environment.')))


def noise_fraction(values: Mapping[str, Any]) -> float:
    """The fraction of noise features in the input of a run with recorded
    bindings `values`, whichever side draws them (the network side's when
    both do)."""
    network, env = resolve(values)
    return float((network.fraction if network else 0.0) or
                 (env.fraction if env else 0.0) or 0.0)


def _is_noise_key(key: str) -> bool:
    configurable, _, name = key.rpartition('.')
    return (configurable in (NEW, 'NetworkNoise') or
            (configurable == 'create_environment' and name in LEGACY_ENV))


def without_same_noise(saved: Mapping[str, Any], current: Mapping[str, Any]
                       ) -> Tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Two recorded configs without their noise bindings when these give
    the same noise features (e.g. old names in one, new in the other), so
    that comparing them shows real changes only; else both unchanged."""
    try:
        same = resolve(saved) == resolve(current)
    except ValueError:
        same = False
    if not same:
        return saved, current
    return tuple({key: value for key, value in values.items()
                  if not _is_noise_key(key)} for values in (saved, current))


def _bound(configurable: str, names) -> Dict[str, Any]:
    """The gin-bound parameters among `names` of `configurable`."""
    values = {}
    for name in names:
        try:
            values[name] = gin.query_parameter(f'{configurable}.{name}')
        except ValueError:
            pass  # not bound
    return values


def _new_values() -> Dict[str, Any]:
    """{'noise_features.<field>': value} of the gin config in force, or {}
    when none is bound. Only then is `noise_features` called, so that a
    config in the old vocabulary records (and hashes) as it always did."""
    if not _bound(NEW, _CHECKS):
        return {}
    config = noise_features()
    return {f'{NEW}.{field}': getattr(config, field) for field in _CHECKS}


def network_config() -> Optional[NoiseConfig]:
    """The network side's settings in the gin config in force (None: no
    network-side noise features)."""
    values = _new_values()
    if values:
        values.update({f'NetworkNoise.{old}': value for old, value in
                       _bound('NetworkNoise', LEGACY_NETWORK).items()})
    else:  # the old vocabulary, read and recorded as it always was
        legacy = NetworkNoise()
        values = {f'NetworkNoise.{old}': getattr(legacy, old)
                  for old in LEGACY_NETWORK}
    return resolve(values)[0]


def env_config(**legacy: Any) -> Optional[NoiseConfig]:
    """The environment side's settings: the gin config in force with
    `create_environment`'s own noise arguments `legacy` (old names, checked
    by the caller). None: no environment-side noise features."""
    values = _new_values()
    values.update({f'create_environment.{old}': value
                   for old, value in legacy.items()})
    return resolve(values)[1]


def env_config_in_force() -> Optional[NoiseConfig]:
    """The environment side's settings from the gin config in force alone,
    in either vocabulary (for checks made before any environment exists).
    None: no environment-side noise features."""
    return env_config(**_bound('create_environment', LEGACY_ENV))


def bound_values() -> Dict[str, Any]:
    """What a run's record adds to its operative config: the gin-bound
    `NetworkNoise.*` parameters (with `noise_features` bound, `NetworkNoise`
    is not called, yet they shape the run) and, with
    `noise_features.where = 'env'`, the environment's noise arguments as
    it was made, under `create_environment`'s names (which the viewer
    reads to rebuild it).

    Raises:
        ValueError: a `create_environment` noise binding set to its default
            next to `noise_features.where = 'env'` that sets it otherwise
            (it would have no effect: name the new binding instead).
    """
    values = {f'NetworkNoise.{old}': value for old, value in
              _bound('NetworkNoise', LEGACY_NETWORK).items()}
    new = _new_values()
    if new.get(f'{NEW}.where') != 'env':
        return values
    bound = _bound('create_environment', LEGACY_ENV)
    for old, value in bound.items():
        field = LEGACY_ENV[old]
        if value == ENV_DEFAULTS[old] and _translate(
                {old: value}, LEGACY_ENV, '')[field] != new[f'{NEW}.{field}']:
            raise ValueError(
                f'create_environment.{old} = {value!r} has no effect next '
                f"to {NEW}.where = 'env'; bind {NEW}.{field} instead.")
    env = resolve({**new, **{f'create_environment.{old}': value
                             for old, value in bound.items()}})[1]
    if env is not None:
        values.update({
            'create_environment.noise_fraction': env.fraction,
            'create_environment.noise_std': env.std,
            'create_environment.noise_histogram_file': env.histogram_file,
            'create_environment.permute_features': env.permute,
            'create_environment.adjust_env_period': env.adjust_period or None})
    return values
