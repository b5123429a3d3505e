"""A run's records: `run_folder` (metrics.jsonl, summary.json, profile.json, the lock, atomic writes,
the config fingerprint: the source of truth) and its W&B mirror (`wandb_sink`, `wandb_offline`)."""
