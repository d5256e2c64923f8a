"""Every default in one place (SwarmKit's values unless noted)."""
import os

API_VERSION = "v1"
DEFAULT_SOCKET = os.environ.get("SWARMPY_DEFAULT_SOCKET", "/var/run/swarmpy.sock")
API_TCP_PORT = 2390          # the API on TCP, mutual TLS only (dockerd's TLS port is 2376)
DEFAULT_DATA_DIR = "/var/lib/swarmpy"
CLUSTER_PORT = 2387          # dispatcher and join RPC; Raft listens on CLUSTER_PORT + 1. Not
                             # docker swarm's 2377, so both can run on one engine side by side.

REPLICAS = 1
RESTART_CONDITION = "any"
RESTART_DELAY_S = 5.0
RESTART_MAX_ATTEMPTS = 0     # 0: unlimited
RESTART_WINDOW_S = 0.0       # 0: unbounded
STOP_GRACE_PERIOD_S = 10.0
PULL_POLICY = "missing"
TASK_HISTORY_LIMIT = 5
UPDATE_PARALLELISM = 1       # tasks replaced at a time when a service's spec changes; 0: all at once

HEARTBEAT_PERIOD_S = 2.0     # swarm: 5 s. A node is down after 3 missed periods: 6 s here, 15 s in swarm
HEARTBEAT_EPSILON_S = 0.5
NODE_DOWN_AFTER_PERIODS = 3

STATUS_BATCH_S = 0.02        # dispatcher collects task status reports this long before one write
SCHEDULER_BATCH_S = 0.005    # scheduler waits this long for more pending tasks before a pass
DOCKER_WORKERS = 8           # parallel Docker Engine API calls per agent
# The daemon's cyclic garbage collector, set once it is up (docs/benchmarks.md, "Cheaper
# Raft messages"): Python's (700, 10, 10) made a leader with 64 writes in flight collect
# ~80 times a second, 14% of its time, in pauses that risked a Raft election.
GC_THRESHOLDS = (10_000, 20, 20)

# A service's update_config and rollback_config (SwarmKit's defaults).
UPDATE_DELAY_S = 0.0
UPDATE_FAILURE_ACTION = "pause"
UPDATE_MONITOR_S = 5.0
UPDATE_MAX_FAILURE_RATIO = 0.0
UPDATE_ORDER = "stop-first"
HEALTH_RESYNC_S = 5.0        # a task with a healthcheck asks the engine this often, for missed events

# Overlay networks (docker's defaults: subnets from 10.0.0.0/8 in /24s; VNIs from 4096).
DEFAULT_ADDR_POOL = ("10.0.0.0/8",)
DEFAULT_ADDR_POOL_MASK = 24
VNI_BASE = 4096
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50          # bytes of outer headers: the overlay's MTU is the underlay's minus this
ENDPOINT_DRAIN_S = 0.3       # a task with a VIP leaves the rotation this long before it is stopped
