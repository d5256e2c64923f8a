"""The replicated cluster store: transactions over kinds of objects, on pysyncobj."""
from raft.errors import StoreError, ConflictError, NotFoundError, ExistsError, NotLeaderError, UnavailableError
from raft.tables import Tables, Event

__all__ = ["StoreError", "ConflictError", "NotFoundError", "ExistsError", "NotLeaderError",
           "UnavailableError", "Tables", "Event"]
