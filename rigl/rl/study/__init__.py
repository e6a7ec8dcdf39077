"""Studies: a grid of gin bindings x seeds, run by `python -m rigl.rl.sweep`.

One job per module (none imports TensorFlow; `config_check` does so only in
its own checking process, and only Ray's backend, `rigl/rl/sweep_ray.py`,
imports Ray):

* `spec`: what to run: the study file (TOML), grid axes and methods.
* `runs`: a run and its identity: directory names from the grid, the
  command record that tells a finished run, the study plan.
* `process`: how a run's training process starts: command line, thread
  variables, log.
* `config_check`: every group's configuration checked before any run starts.
* `status`: the status table, ETA and failure messages both backends print.
* `local`: the local backend, several runs at once on this machine.
"""
