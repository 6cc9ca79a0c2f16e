"""Long-lived Ray actors: feed actors, the Market Data Server, execution and risk.

Garbage collection in streaming actors: an actor process holds a million or so long-lived
objects from its imports (Ray, NumPy, pandas...), and a busy stream allocates fast enough
to trigger a full cyclic collection every few seconds, each walking all of them: a 50-100 ms
stall of the stream. Each actor calls ``gc.freeze()`` once it has started, which moves
everything alive at that point out of the collector's walks; events, which are
short-lived and free of cycles, are reclaimed by reference counting as before.
"""
