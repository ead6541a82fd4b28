"""Storage backends behind ``core.interfaces.IQueueStorage``: memory and SQL."""
