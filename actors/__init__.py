"""Long-lived Ray actors: feed actors, the Market Data Server, execution and risk."""
