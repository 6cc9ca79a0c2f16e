"""The ``botmain`` command: the top floor. It imports every layer below it; nothing imports it.

One module per command group: ``store_cluster`` (up, down, status), ``research`` (ingest,
backtest, sweep, runs, train-selector), ``market_data`` (mds), ``selector`` (serve, decide);
``main`` gathers them into one group and ``session`` holds what every command needs.
"""
