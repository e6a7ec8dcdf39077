"""Typed run settings: each algorithm declares its settings as a dataclass,
and `train_eval.<name>` gin bindings are checked against it.

A field's type hint says what is allowed (int, float, str, bool, Optional[...]
and Tuple[int, ...]); `setting(...)` adds a range. Every bad value becomes a
one-line `ValueError` naming the binding, the value and what is allowed, so a
typo or a string where a number belongs never reaches TensorFlow.
"""

import dataclasses
import difflib
import math
import typing
from typing import Any, Dict, Optional, Tuple

PREFIX = 'train_eval'


def setting(default: Any, low: Optional[float] = None,
            high: Optional[float] = None, low_open: bool = False,
            high_open: bool = False) -> Any:
    """A dataclass field with an allowed range [low, high] (open ends when
    `low_open` / `high_open`). For tuples the range applies to each item."""
    return dataclasses.field(default=default, metadata=dict(
        low=low, high=high, low_open=low_open, high_open=high_open))


def _describe(hint) -> str:
    if typing.get_origin(hint) in (tuple, Tuple):
        item = typing.get_args(hint)[0]
        return 'a tuple of ' + {int: 'integers', float: 'numbers'}.get(
            item, str(item))
    return {int: 'an integer', float: 'a finite number', str: 'a string',
            bool: 'True or False'}.get(hint, str(hint))


def _matches(value: Any, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (tuple, Tuple):
        item = typing.get_args(hint)[0]
        return isinstance(value, (tuple, list)) and all(
            _matches(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    raise TypeError(f'Unsupported setting type {hint!r}.')


def _range_text(meta: Dict) -> str:
    low, high = meta.get('low'), meta.get('high')
    if low is not None and high is not None:
        return (f'in {"(" if meta["low_open"] else "["}{low}, {high}'
                f'{")" if meta["high_open"] else "]"}')
    if low is not None:
        return f'{">" if meta["low_open"] else ">="} {low}'
    if high is not None:
        return f'{"<" if meta["high_open"] else "<="} {high}'
    return ''


def _in_range(value: float, meta: Dict) -> bool:
    low, high = meta.get('low'), meta.get('high')
    if low is not None and (value <= low if meta['low_open'] else value < low):
        return False
    if high is not None and (value >= high if meta['high_open']
                             else value > high):
        return False
    return True


def check_field(name: str, value: Any, hint, meta: Dict) -> Any:
    """Returns `value` (tuples for sequences) or raises naming `name`."""
    ranged = _range_text(meta)
    optional = typing.get_origin(hint) is typing.Union
    inner = [a for a in typing.get_args(hint) if a is not type(None)][0] \
        if optional else hint
    allowed = (_describe(inner) + (f' {ranged}' if ranged else '')
               + (' or None' if optional else ''))
    if not _matches(value, hint):
        raise ValueError(f'{name} must be {allowed}, got {value!r}'
                         + ('; quote strings' if hint is str else '') + '.')
    if value is None or isinstance(value, (str, bool)):
        return value
    items = value if isinstance(value, (tuple, list)) else [value]
    if isinstance(value, (tuple, list)) and not value:
        raise ValueError(f'{name} must be a non-empty tuple, got {value!r}.')
    for item in items:
        if not _in_range(item, meta):
            raise ValueError(f'{name} must be {allowed}, got {value!r}.')
    return tuple(value) if isinstance(value, list) else value


def build(settings_class, params: Dict[str, Any], what: str):
    """Makes a checked `settings_class` from gin's `train_eval` bindings.

    Args:
        settings_class: the algorithm's settings dataclass.
        params: bound values by field name.
        what: the algorithm's name, for messages.

    Raises:
        ValueError: for an unknown name (with suggestions) or a bad value.
    """
    fields = {f.name: f for f in dataclasses.fields(settings_class)}
    for name in params:
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=3)
            hint = f' Did you mean {", ".join(close)}?' if close else ''
            raise ValueError(
                f'{PREFIX}.{name} is not a {what} setting.{hint} Allowed: '
                f'{", ".join(sorted(fields))}.')
    hints = typing.get_type_hints(settings_class)
    values = {}
    for name, field in fields.items():
        value = params.get(name, field.default)
        values[name] = check_field(f'{PREFIX}.{name}', value, hints[name],
                                   dict(field.metadata))
    settings = settings_class(**values)
    check = getattr(settings, 'check', None)
    if check is not None:
        check()
    return settings


def as_bindings(settings) -> Dict[str, Any]:
    """{'train_eval.<field>': value} with JSON-friendly values."""
    return {f'{PREFIX}.{name}': list(value) if isinstance(value, tuple)
            else value for name, value in dataclasses.asdict(settings).items()}


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What every run has, whatever the agent (intervals in the loop's
    own unit: train steps off-policy, iterations on-policy)."""
    env_name: str = 'HalfCheetah-v5'
    seed: Optional[int] = setting(None, low=0)
    eval_interval: int = setting(10000, low=1)
    eval_episodes: int = setting(30, low=1)
    checkpoint_interval: int = setting(50000, low=1)
    summary_interval: int = setting(1000, low=1)
    log_interval: int = setting(5000, low=1)
    policy_save_interval: int = setting(0, low=0)
    # The greedy policy as a SavedModel in `policy/` at the end. False
    # skips it (about a second per run): runs that are watched from their
    # checkpoints (`view` falls back to the newest) or not at all.
    save_final_policy: bool = True
    average_last_fraction: float = setting(0.1, low=0, high=1, low_open=True)
    # A console line per training episode and a block per evaluation, as the
    # ANF tutorial shows them.
    log_episodes: bool = False
    # Cumulative loop seconds in results rows (evaluation and checkpoints
    # excluded), split into the compiled train calls and the rest: off-policy
    # `train_call_seconds`, on-policy `collect_seconds` / `train_seconds`.
    time_loop: bool = False
    # Train dense networks at the widths whose parameter counts match the
    # configured sparse networks' active counts (Graesser et al.'s
    # parameter-matched dense baseline).
    match_dense_params: bool = False
    # Wide sparse networks at a fixed budget (Obando-Ceron et al. 2024):
    # the configured sparsity sets each sparse network's active count at
    # width 1, and at `width` its sparsity rises to keep that count.
    keep_active_count: bool = False
    # How sparse layers run: 'masked' (dense kernels with masks), 'sparse'
    # (only the active weights, with compiled sparse CPU kernels) or 'auto'
    # (`algos.base.resolve_sparse_execution`: 'sparse' where measured
    # faster and supported, else 'masked'; runs record what it chose).
    sparse_execution: str = 'auto'


def check(name: str, value: Any, hint, low: Optional[float] = None,
          high: Optional[float] = None, low_open: bool = False,
          high_open: bool = False) -> Any:
    """`check_field` for a single argument of a gin configurable."""
    return check_field(name, value, hint, dict(
        low=low, high=high, low_open=low_open, high_open=high_open))
