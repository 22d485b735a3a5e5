"""Compression stages (prune, distill, quantize). Built on the kernel in ``deepslim``."""
