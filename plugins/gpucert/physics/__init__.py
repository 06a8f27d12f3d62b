"""Physics engines: does the node reach its datasheet? GEMM, memory copies, P2P, NCCL.

core.py owns the one timing loop and the benchmark lifecycle; each benchmark is a small module
(parameters, operation, FLOP/byte formula); datasheet.py holds the per-model peaks they are
judged against. No pytest inside: the checks in tests/hardware and `gpucert bench` call these.
"""
