"""Forward testing: a strategy traded on the paper venue over replayed bars, journaled."""
