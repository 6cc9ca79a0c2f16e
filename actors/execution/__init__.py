"""The Execution Server: the venue-client interface, the paper venue, and the order flow
from an approved intent to journaled fills."""
