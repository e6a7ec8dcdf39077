"""Interval triggers (`loops.triggers`): when they fire, at the last step,
after a resume and on counters that jump."""

from rigl.rl.tfagents.loops.triggers import IntervalTrigger, Triggers


def fired_steps(interval, steps, **kwargs):
    """The steps at which a trigger fires, called at each of `steps`."""
    calls = []
    trigger = IntervalTrigger(interval, calls.append, **kwargs)
    for step in steps:
        trigger(step)
    return calls


def test_consecutive_steps_fire_at_multiples_as_the_modulo_did():
    for interval in (1, 3, 7):
        calls = fired_steps(interval, range(1, 30))
        assert calls == [s for s in range(1, 30) if s % interval == 0]


def test_last_step_fires_once_multiple_or_not():
    assert fired_steps(10, range(1, 26), last=25) == [10, 20, 25]
    assert fired_steps(5, range(1, 21), last=20) == [5, 10, 15, 20]


def test_zero_or_none_interval_fires_only_at_the_last_step():
    assert fired_steps(0, range(1, 10)) == []
    assert fired_steps(None, range(1, 10), last=9) == [9]


def test_resumed_counter_fires_at_the_next_multiple_only():
    # A run resumed at step 30 (a multiple: its work was done before).
    assert fired_steps(10, range(31, 52), start=30) == [40, 50]
    assert fired_steps(10, range(36, 52), start=35) == [40, 50]


def test_jumping_counter_fires_once_per_call_that_crosses():
    calls = fired_steps(10, [4, 8, 12, 16, 35, 36, 40], start=4)
    assert calls == [12, 35, 40]


def test_work_that_advances_the_counter_is_not_counted_again():
    """As ANF's refill steps after a redraw: the multiples passed are
    recorded before the work runs."""
    counter = {'steps': 95}
    calls = []

    def refill(step):
        calls.append(step)
        counter['steps'] += 30  # crosses 200 and then some

    trigger = IntervalTrigger(100, refill, start=counter['steps'])
    for _ in range(5):
        counter['steps'] += 10
        trigger(counter['steps'])
    # 105 fires (100 crossed); the refill takes the counter to 135; then
    # 145, 155, 165, 175: no multiple crossed since 135.
    assert calls == [105]
    assert trigger.multiples == 1
    trigger.multiples = 3  # restored from a checkpoint
    assert not trigger(380) and trigger(400)


def test_triggers_run_in_order():
    order = []
    triggers = Triggers(IntervalTrigger(2, lambda s: order.append(('a', s))),
                        IntervalTrigger(1, lambda s: order.append(('b', s))),
                        IntervalTrigger(2, lambda s: order.append(('c', s)),
                                        last=3))
    for step in (1, 2, 3):
        triggers(step)
    assert order == [('b', 1), ('a', 2), ('b', 2), ('c', 2), ('b', 3),
                     ('c', 3)]
