"""HTTP API of the ReMix finetuning service: jobs, datasets, checkpoints, metrics and events."""
