"""Tiny random-weight models built locally from configs (``--model tiny-*``): tests, the offline smoke
run and the benchmarks use them. ``presets`` names them (all the engines import to recognise
one); ``build.build_tiny_model`` builds one; ``faithful`` builds the ones that copy a real
checkpoint's tokenizer (``real_tokenizers``, ``vocab/``), template and geometry; ``words`` is the
word-level tokenizer of the others.
"""
