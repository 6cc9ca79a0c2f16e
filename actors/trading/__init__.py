"""A trading session as Ray actors: the strategy, the Risk Rules Monitor, the Execution
Server and the paper venue, each its own named actor, running the per-bar flow of
actors/bar_flow.py (the same three sides a ``PaperSession`` calls in one process)."""
