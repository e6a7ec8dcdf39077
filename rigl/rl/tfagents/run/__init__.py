"""Run plumbing shared by every agent and loop: settings, seeds, the run
directory (lock, config guard), checkpoints, replay, results, summaries and
console output."""
