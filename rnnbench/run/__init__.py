"""The run: config schemas and their check (`config`), the one place where a config becomes objects
(`build`, with the checks of a user's own cell or task in `interface`), the training loop (`train`),
checkpoints and resuming (`checkpoint`), the Hydra app (`app`, `python -m rnnbench`), its callbacks
(`callbacks`) and its `--help` page (`help`)."""
