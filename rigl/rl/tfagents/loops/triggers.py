"""Interval triggers: the periodic work of the training loops.

Train summaries, gradient SNR summaries, progress lines, evaluation, policy
saves, checkpoints, the distributed learner's variable pushes and ANF's
feature-permutation redraws all run "every N steps" of some counter (train
steps, PPO iterations, env steps). Each is an `IntervalTrigger`: it fires
when the counter crosses a multiple of its interval (once, however many
multiples a jump crosses) and, where a loop asks for it, at the last step.
A loop builds its triggers once and calls them in order after each step;
what runs when is then one list in the loop, shared in form by the
off-policy loop, the on-policy loop and the distributed learner (as
TF-Agents' `IntervalTrigger`, which its `Learner` and `Actor` use).

Crossing rather than `step % interval == 0` makes a trigger right for
counters that jump (env steps advance by several per train step) and lets
it carry its state across a resume (`multiples`).
"""

from typing import Callable, Optional


class IntervalTrigger:
    """Calls `fn(step)` when `step` crosses a multiple of `interval`.

    Args:
        interval: the counter's steps between calls; 0 or None: never
            (but at `last`).
        fn: the work; it gets the counter's value.
        last: the counter's final value, where the trigger fires too
            whether or not it is a multiple (None: no such call).
        start: the counter's value before the first call: multiples up to
            it count as passed.
    """

    def __init__(self, interval: Optional[int], fn: Callable[[int], None],
                 last: Optional[int] = None, start: int = 0):
        self.interval = int(interval or 0)
        self._fn = fn
        self._last = last
        # The multiples of the interval passed when it last fired (or at
        # `start`): a checkpoint saves it when the counter can jump.
        self.multiples = start // self.interval if self.interval else 0

    def __call__(self, step: int) -> bool:
        """Fires if due at `step`; returns whether it fired."""
        crossed = (self.interval > 0 and
                   step // self.interval > self.multiples)
        if crossed:
            # Before the work: work that advances the counter (ANF's refill
            # steps) is not counted again.
            self.multiples = step // self.interval
        if crossed or step == self._last:
            self._fn(step)
            return True
        return False


class Triggers:
    """Triggers called in order with the same counter value."""

    def __init__(self, *triggers: IntervalTrigger):
        self.triggers = list(triggers)

    def __call__(self, step: int) -> None:
        for trigger in self.triggers:
            trigger(step)
