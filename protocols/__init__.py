"""Wire protocols: each translates into core.interfaces.IQueueService and nothing else."""
