"""Objectives: CPC, aligned CPC, RPC, MGF, TriNet."""
