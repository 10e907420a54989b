"""Hosting adapters: Hugging Face Spaces (finding ``spaces``, sizing GPU calls) and ZeroGPU's per-call GPU."""
