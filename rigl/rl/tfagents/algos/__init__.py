"""Algorithm modules: each owns its settings, networks, masks, agent, eval
policy, training-FLOP formula and extra summaries (see `base`).

Shared by them: `base` (the interface the loops use, `OffPolicyAlgorithm`),
`actor_critic` (SAC and TD3's actor and two critics), `optimizers` (Adam with
a fused update step, weight decay) and `checks` (settings checks)."""
