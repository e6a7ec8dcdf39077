"""The sparse method of a run, as one typed and validated object.

A run's sparsity is configured by gin bindings of several configurables
(`train_eval.train_mode*`, `init_masks`, `wrap_all_layers`, `mask_updater`,
the per-network sparsity strings). `SparseMethod` gathers them once: the
method (a name in `sparsity.updaters.UPDATERS`, or 'dense'), the sparsity and
its distribution, per-network overrides, the drop/grow or pruning schedule
and the grow rule. It is printed at the start of a run, recorded whole in
`run.json` and the results metadata, and builds the mask updaters, so no
other code re-derives "the method" from binding strings.

`from_values` reads the same flat {binding: value} dict a run records
(`run_dir.config_record`), so a record from any version gives its method.
"""

import dataclasses
import inspect
import math
from typing import Any, Dict, Optional, Tuple

import gin

from rigl import sparse_utils
from rigl.rl.tfagents import sparse_layers
from rigl.rl.tfagents.run import settings as settings_lib
from rigl.rl.tfagents.sparsity import updaters

DENSE = 'dense'
# A dense network at the width whose parameter count matches a sparse
# method's active count (`train_eval.match_dense_params`).
MATCHED_DENSE = 'dense_matched'
PRUNE = 'prune'
# Per-network sparsity strings: the setting and the network groups it names.
OVERRIDE_SETTINGS = {
    'train_eval.actor_critic_sparsities_str': ('actor', 'critic'),
    'train_eval.actor_value_sparsities_str': ('actor', 'value'),
}
# Network group of each train-mode setting.
TRAIN_MODE_GROUPS = {
    'train_eval.train_mode': 'q_network',
    'train_eval.train_mode_actor': 'actor',
    'train_eval.train_mode_value': 'value',
}


def _defaults(function) -> Dict[str, Any]:
    return {name: parameter.default for name, parameter in
            inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


_DEFAULTS = {
    'init_masks': _defaults(sparse_layers.init_masks),
    'wrap_all_layers': _defaults(sparse_layers.wrap_all_layers),
    'mask_updater': _defaults(updaters.mask_updater),
}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When masks change. Drop/grow methods: every `update_freq` steps from
    `begin_step` to `last_update_step`, dropping `init_drop_fraction` of the
    active weights on a `schedule_alg` decay. Pruning: from
    `initial_sparsity` at `begin_step` to the final sparsity at `end_step`,
    every `frequency` steps."""
    update_freq: Optional[int] = None
    init_drop_fraction: Optional[float] = None
    schedule_alg: Optional[str] = None
    begin_step: Optional[int] = None
    last_update_step: Optional[int] = None
    initial_sparsity: Optional[float] = None
    end_step: Optional[int] = None
    frequency: Optional[int] = None

    def describe(self) -> str:
        if self.update_freq is not None:
            end = ('never' if self.last_update_step == 0 else
                   'no end' if self.last_update_step < 0 else
                   f'until step {self.last_update_step:,}')
            return (f'drop {self.init_drop_fraction:g} ({self.schedule_alg}) '
                    f'every {self.update_freq:,} steps from step '
                    f'{self.begin_step:,}, {end}')
        if self.end_step is not None:
            return (f'{self.initial_sparsity:g} -> final from step '
                    f'{self.begin_step:,} to {self.end_step:,} every '
                    f'{self.frequency:,}')
        return 'masks fixed'


@dataclasses.dataclass(frozen=True)
class SparseMethod:
    """What makes a run sparse, and how its masks evolve.

    Attributes:
        method: 'dense' or an `updaters.UPDATERS` name ('static', 'set',
            'rigl', 'prune', ...).
        sparsity: the target sparsity (the final one for pruning).
        distribution: how it spreads over layers (`sparse_utils.METHODS`).
        sparse_networks: the network groups that are sparse.
        overrides: (group, sparsity) pairs replacing `sparsity` for a group.
        sparse_output_layer: whether output layers are sparse too.
        schedule: when masks change.
        grow_init: value of grown connections (`updaters.GROW_INITS`).
        reinit_when_same: restart connections dropped and regrown at once.
        fixed_sparse_init: weights redrawn with the mask's real fan-in.
        input_layer_sparsity: a fixed first-layer sparsity, or None.
        erk_power_scale: the ERK exponent.
        closeness: the exponent of ANF's 'anf_new' distribution.
        use_stateless: random scores from stateless streams (resumable).
        updater_seed: a fixed seed of the updaters' streams (None: derived
            from the run's seed, one stream per optimizer).
        matched_to: for 'dense_matched', the sparse method whose active
            parameter count the dense widths match.
        keep_active_count: `sparsity` (and the overrides) set each network's
            active count at width 1; wider networks are sparser so as to
            keep it (`Algorithm.widths` puts their sparsities in
            `overrides`).
    """
    method: str = DENSE
    sparsity: float = 0.0
    distribution: Optional[str] = None
    sparse_networks: Tuple[str, ...] = ()
    overrides: Tuple[Tuple[str, float], ...] = ()
    sparse_output_layer: bool = False
    schedule: Schedule = Schedule()
    grow_init: str = 'zero'
    reinit_when_same: bool = False
    fixed_sparse_init: bool = False
    input_layer_sparsity: Optional[float] = None
    erk_power_scale: float = 1.0
    closeness: float = 0.2
    use_stateless: bool = True
    updater_seed: Optional[int] = None
    matched_to: Optional['SparseMethod'] = None
    keep_active_count: bool = False

    def __post_init__(self):
        allowed = (DENSE, MATCHED_DENSE) + tuple(updaters.UPDATERS)
        if self.method not in allowed:
            raise ValueError(f'sparse method {self.method!r}; allowed: '
                             f'{", ".join(allowed)}.')
        if self.method == MATCHED_DENSE and self.matched_to is None:
            raise ValueError("sparse method 'dense_matched' needs the sparse "
                             'method it matches (matched_to).')
        if self.method in (DENSE, MATCHED_DENSE):
            return
        sparse_utils.check_sparsity(self.sparsity, 'sparsity')
        for group, value in self.overrides:
            sparse_utils.check_sparsity(value, f'{group} sparsity')
        if self.distribution not in sparse_utils.METHODS:
            raise ValueError(f'sparsity distribution {self.distribution!r}; '
                             f'allowed: {", ".join(sparse_utils.METHODS)}.')

    @property
    def is_sparse(self) -> bool:
        return self.method not in (DENSE, MATCHED_DENSE)

    @property
    def update_alg(self) -> Optional[str]:
        """The drop/grow algorithm ('static', 'set', 'rigl', ...), None for
        dense networks and pruning."""
        return None if self.method in (DENSE, MATCHED_DENSE, PRUNE) else (
            self.method)

    def sparsity_of(self, group: str) -> float:
        """The target sparsity of a network group."""
        return dict(self.overrides).get(group, self.sparsity)

    def mask_kwargs(self, group: str) -> Dict[str, Any]:
        """`sparse_layers.init_masks` arguments for a network group's
        initial masks (pruning starts from no masks)."""
        if not self.is_sparse:
            return {}
        if self.method == PRUNE:
            return dict(sparsity=self.schedule.initial_sparsity or 0.0,
                        mask_init_method=self.distribution,
                        erk_power_scale=self.erk_power_scale,
                        fixed_sparse_init=self.fixed_sparse_init)
        return dict(sparsity=self.sparsity_of(group),
                    mask_init_method=self.distribution,
                    erk_power_scale=self.erk_power_scale,
                    input_layer_sparsity=self.input_layer_sparsity,
                    closeness=self.closeness,
                    fixed_sparse_init=self.fixed_sparse_init)

    def wrap_kwargs(self, group: str) -> Dict[str, Any]:
        """`sparse_layers.wrap_all_layers` arguments for a network group's
        sparse layers: 'constant' masks, or gradual pruning to the group's
        sparsity on the schedule."""
        if self.method != PRUNE:
            return dict(mode='constant')
        schedule = self.schedule
        return dict(mode='prune', initial_sparsity=schedule.initial_sparsity,
                    final_sparsity=self.sparsity_of(group),
                    mask_init_method=self.distribution,
                    erk_power_scale=self.erk_power_scale,
                    begin_step=schedule.begin_step, end_step=schedule.end_step,
                    frequency=schedule.frequency)

    def counted_every(self, period: int,
                      keep_update_freq: bool = False) -> 'SparseMethod':
        """This method for an optimizer that steps every `period`-th train
        step (TD3's delayed actor: its step k is train step k * period),
        with the drop/grow schedule still in train steps: `update_freq` F
        becomes F / gcd(F, period) of its steps, so it updates every
        lcm(F, period) train steps, with the other optimizers when period
        divides F; `begin_step` the first of its steps at or after it; a
        positive `last_update_step` the last at or before it (at least 1).
        With `keep_update_freq` (RLx2), F stays in the optimizer's own
        steps; only begin and end move.
        """
        schedule = self.schedule
        if period == 1 or schedule.update_freq is None:
            return self
        last = schedule.last_update_step
        if last > 0:
            last = max(1, last // period)
        begin = -(-schedule.begin_step // period)
        if last > 0:
            begin = min(begin, last)
        return dataclasses.replace(self, schedule=dataclasses.replace(
            schedule,
            update_freq=schedule.update_freq if keep_update_freq else
            schedule.update_freq // math.gcd(schedule.update_freq, period),
            begin_step=begin, last_update_step=last))

    def make_updater(self) -> updaters.MaskUpdater:
        """A fresh updater of this method (one per masked optimizer)."""
        method = 'static' if not self.is_sparse else self.method
        schedule = self.schedule
        kwargs = {} if schedule.update_freq is None else dict(
            update_freq=schedule.update_freq,
            init_drop_fraction=schedule.init_drop_fraction,
            schedule_alg=schedule.schedule_alg,
            begin_step=schedule.begin_step,
            last_update_step=schedule.last_update_step)
        return updaters.UPDATERS[method](
            seed=self.updater_seed, grow_init=self.grow_init,
            reinit_when_same=self.reinit_when_same,
            use_stateless=self.use_stateless, **kwargs)

    def describe(self) -> str:
        """One line for the console."""
        if self.method == MATCHED_DENSE:
            target = self.matched_to.describe().split(': ', 1)[1]
            return ('sparse method: dense, widths matching the parameter '
                    f'count of: {target}')
        if not self.is_sparse:
            return 'sparse method: dense'
        overrides = ''.join(f', {group} {value:g}'
                            for group, value in self.overrides)
        return (f'sparse method: {self.method}, sparsity {self.sparsity:g} '
                f'{self.distribution}{overrides} on '
                f'{", ".join(self.sparse_networks)}'
                f'{" with output layers" if self.sparse_output_layer else ""};'
                f' {self.schedule.describe()}'
                + (f'; grow init {self.grow_init}'
                   if self.update_alg not in (None, 'static') else '')
                + ('; active counts kept at their width-1 values'
                   if self.keep_active_count else ''))

    def as_record(self) -> Dict[str, Any]:
        """JSON-ready, every field."""
        record = dataclasses.asdict(self)
        record['overrides'] = dict(self.overrides)
        record['sparse_networks'] = list(self.sparse_networks)
        record['schedule'] = {key: value for key, value in
                              record['schedule'].items() if value is not None}
        if self.matched_to is not None:
            record['matched_to'] = self.matched_to.as_record()
        return record


def _value(values: Dict[str, Any], configurable: str, name: str):
    key = f'{configurable}.{name}'
    return values[key] if key in values else _DEFAULTS[configurable][name]


def _overrides(values: Dict[str, Any]) -> Tuple[Tuple[str, float], ...]:
    for setting, groups in OVERRIDE_SETTINGS.items():
        text = values.get(setting)
        if text:
            numbers = [float(part) for part in str(text).split(',')]
            return tuple(zip(groups, numbers))
    return ()


def from_values(values: Dict[str, Any]) -> SparseMethod:
    """The sparse method of a run from its flat {binding: value} record
    (`train_eval.*` settings and other gin parameters; unbound ones take
    the configurables' defaults)."""
    method = _configured_method(values)
    if values.get('train_eval.keep_active_count'):
        if not method.is_sparse or values.get(
                'train_eval.match_dense_params'):
            raise ValueError(
                'train_eval.keep_active_count needs a sparse config (a '
                "train_mode set to 'sparse') and no "
                'train_eval.match_dense_params.')
        method = dataclasses.replace(method, keep_active_count=True)
    if values.get('train_eval.match_dense_params'):
        if not method.is_sparse:
            raise ValueError('train_eval.match_dense_params needs a sparse '
                             'config to match (a train_mode set to '
                             "'sparse'); this one is dense.")
        return SparseMethod(method=MATCHED_DENSE, matched_to=method)
    return method


def _configured_method(values: Dict[str, Any]) -> SparseMethod:
    """The method the train modes and sparsity bindings describe."""
    sparse_networks = tuple(
        group for setting, group in TRAIN_MODE_GROUPS.items()
        if values.get(setting) == 'sparse')
    if not sparse_networks:
        return SparseMethod()
    if 'train_eval.train_mode_value' in values and values.get(
            'train_eval.actor_critic_sparsities_str') is not None:
        # SAC and TD3 call their value networks critics.
        sparse_networks = tuple('critic' if group == 'value' else group
                                for group in sparse_networks)
    common = dict(
        sparse_networks=sparse_networks, overrides=_overrides(values),
        closeness=_value(values, 'init_masks', 'closeness'),
        use_stateless=_value(values, 'mask_updater', 'use_stateless'),
        updater_seed=_value(values, 'mask_updater', 'seed'),
        sparse_output_layer=bool(values.get('train_eval.sparse_output_layer',
                                            False)),
        fixed_sparse_init=bool(_value(values, 'init_masks',
                                      'fixed_sparse_init')),
        input_layer_sparsity=_value(values, 'init_masks',
                                    'input_layer_sparsity'))
    if _value(values, 'wrap_all_layers', 'mode') == 'prune':
        update_alg = _value(values, 'mask_updater', 'update_alg')
        if update_alg not in ('', 'static'):
            raise ValueError(
                "wrap_all_layers.mode is 'prune' and mask_updater.update_alg "
                f'is {update_alg!r}: a run has one sparse method; unbind one.')

        def wrap(name):
            return _value(values, 'wrap_all_layers', name)
        return SparseMethod(
            method=PRUNE, sparsity=wrap('final_sparsity'),
            distribution=wrap('mask_init_method'),
            erk_power_scale=wrap('erk_power_scale'),
            schedule=Schedule(initial_sparsity=wrap('initial_sparsity'),
                              begin_step=wrap('begin_step'),
                              end_step=wrap('end_step'),
                              frequency=wrap('frequency')), **common)

    def updater(name):
        return _value(values, 'mask_updater', name)
    method = updater('update_alg') or 'static'
    schedule = Schedule() if method == 'static' else Schedule(
        update_freq=updater('update_freq'),
        init_drop_fraction=updater('init_drop_fraction'),
        schedule_alg=updater('schedule_alg'),
        begin_step=updater('begin_step'),
        last_update_step=updater('last_update_step'))
    return SparseMethod(
        method=method, sparsity=_value(values, 'init_masks', 'sparsity'),
        distribution=_value(values, 'init_masks', 'mask_init_method'),
        erk_power_scale=_value(values, 'init_masks', 'erk_power_scale'),
        schedule=schedule, grow_init=updater('grow_init'),
        reinit_when_same=updater('reinit_when_same'), **common)


def bound_values() -> Dict[str, Any]:
    """The gin-bound parameters of the configurables a sparse method is
    read from, as {'configurable.name': value} (unbound ones left out)."""
    values = {}
    for configurable, defaults in _DEFAULTS.items():
        for name in defaults:
            try:
                values[f'{configurable}.{name}'] = gin.query_parameter(
                    f'{configurable}.{name}')
            except ValueError:
                pass  # not bound: the default
    return values


def from_gin(settings) -> SparseMethod:
    """The sparse method of the gin config in force, for `settings` (an
    algorithm's settings dataclass): read once, when the algorithm is
    built, and passed down to its networks and optimizers."""
    values = {f'{settings_lib.PREFIX}.{field.name}': getattr(settings,
                                                              field.name)
              for field in dataclasses.fields(settings)}
    values.update(bound_values())
    return from_values(values)
