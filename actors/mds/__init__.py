"""The Market Data Server: consolidated prices, staleness, fan-out and persistence.

``server.MarketDataServer`` is the logic (plain asyncio, testable without Ray);
``actor.MdsActor`` is the named Ray actor that hosts it.
"""
