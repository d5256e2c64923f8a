"""swarmpy: a container orchestrator in the spirit of Docker's swarm mode."""
__version__ = "0.1.0"
