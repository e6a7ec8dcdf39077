"""Checks of the `train_eval` settings that several algorithms share.

Each algorithm's `Settings.check()` calls these before anything is built,
so that a wrong binding fails at once with one line naming the binding and
what it allows, instead of deep inside network or agent construction.
"""

from typing import List, Optional, Tuple

from rigl.rl.tfagents import networks
from rigl.rl.tfagents.sparsity import targets

# How train_eval.weight_decay acts (`algos.optimizers.make_optimizer`):
#   'original': as the algorithm's original code (`Algorithm.original_decay`);
#   'anf': ANF's MaskAdam: weight_decay * w added to every parameter's
#       gradient;
#   'decoupled': AdamW: w -= learning_rate * weight_decay * w each step.
WEIGHT_DECAY_MODES = ('original', 'anf', 'decoupled')


def check_weight_decay_mode(value: str) -> None:
    """Raises ValueError unless `value` is one of `WEIGHT_DECAY_MODES`."""
    if value not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f'train_eval.weight_decay_mode is {value!r}; allowed: '
            f'{", ".join(WEIGHT_DECAY_MODES)}.')


def check_train_modes(*pairs: Tuple[str, str]) -> None:
    """Raises ValueError unless each (setting name, value) pair names one of
    `networks.TRAIN_MODES`."""
    for name, value in pairs:
        networks.check_train_mode(value, f'train_eval.{name}')


def check_target_sparsity(value: str) -> None:
    """Raises ValueError unless `value` is one of the target networks'
    sparsity modes (`sparsity.targets.TARGET_SPARSITY_MODES`)."""
    if value not in targets.TARGET_SPARSITY_MODES:
        raise ValueError(
            f'train_eval.target_sparsity is {value!r}; allowed: '
            f'{", ".join(targets.TARGET_SPARSITY_MODES)}.')


def parse_float_list(text: str, name: str,
                     count: int) -> Optional[List[float]]:
    """'0.9,0.8' -> [0.9, 0.8]; '' -> None.

    Per-network settings (sparsities, widths) come as one comma-separated
    gin string so that a sweep can bind them as one value.

    Raises:
        ValueError: `text` is not `count` comma-separated numbers.
    """
    if not text:
        return None
    try:
        values = [float(part) for part in text.split(',')]
    except ValueError:
        values = []
    if len(values) != count:
        raise ValueError(f'{name} must be {count} comma-separated numbers, '
                         f'got {text!r}.')
    return values
