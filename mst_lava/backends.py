"""The backends `mst run` and `mst verify` can run a network on (the one list; standard library only)."""
LAVA_BACKENDS = ("lava-cpu", "loihi")         # Lava's CPU simulator (Loihi2SimCfg), Loihi 2 (Loihi2HwCfg, lava-loihi)
BACKENDS = LAVA_BACKENDS + ("torch",)         # + the torch executor of the file (NetSim)
