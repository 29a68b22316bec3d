"""cvg_bench: generate, steer and score compositional text-to-video; the reference CVG."""

__version__ = "0.1.0"
