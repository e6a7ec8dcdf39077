"""Training loops: `off_policy` (SAC, TD3, DQN), `on_policy` (PPO) and
`distributed` (the Reverb learner and actors). They step environments
through one `collector.Collector`, run their periodic work as
`triggers.IntervalTrigger`s, and leave everything around the loop to a
`session.Session`, which wires `run_directory` (start or resume,
checkpoints), `outputs` (results, summaries, console) and `evaluator`."""
