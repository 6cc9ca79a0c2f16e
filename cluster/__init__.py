"""Cluster runtime: configuration, the domain model, the shared store, the Parquet lake,
starting or joining a Ray cluster, and the ``botmain`` command line."""
