"""Algorithm modules: each owns its settings, networks, masks, agent, eval
policy, training-FLOP formula and extra summaries (see `base`)."""
