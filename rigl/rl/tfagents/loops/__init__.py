"""Training loops: `off_policy` (SAC, TD3, DQN) and `on_policy` (PPO), both
built on `session.Session`, which owns everything around the loop."""
