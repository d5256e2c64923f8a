"""Tiny static C programs for overlay-network tests and benchmarks (mcast, tcpblast) and the
test image that carries them; see build.py."""
from .build import IMAGE, PROGRAMS, build, build_image, sources_hash

__all__ = ["IMAGE", "PROGRAMS", "build", "build_image", "sources_hash"]
