"""Compose stacks: loader.py turns compose files into one validated config dict
(docker/cli's loader); convert.py turns that into swarmpy service specs."""
