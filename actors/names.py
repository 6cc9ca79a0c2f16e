"""Names of Botmain's named Ray actors; they show under these in the Ray dashboard."""

NAMESPACE = "botmain"
MDS = "mds"
MDS_STORE = "mds-store"  # the MDS's PostgreSQL writer
RISK = "risk"  # the Risk Rules Monitor
EXECUTION = "execution"  # the Execution Server
PAPER_VENUE = "paper-venue"  # the simulated venue paper trading fills on


def feed_actor(feed: str) -> str:
    return f"feed:{feed}"


def strategy_actor(strategy: str) -> str:
    return f"strategy:{strategy}"
