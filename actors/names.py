"""Names of Botmain's named Ray actors; they show under these in the Ray dashboard."""

NAMESPACE = "botmain"
MDS = "mds"
MDS_STORE = "mds-store"  # the MDS's PostgreSQL writer


def feed_actor(feed: str) -> str:
    return f"feed:{feed}"


def strategy_actor(strategy: str) -> str:
    return f"strategy:{strategy}"
