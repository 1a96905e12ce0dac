"""``mst run`` and ``mst verify``: an exported network (.net) over test samples.

One job per module:

- :mod:`.commands`: the two commands' arguments and ``mst run`` itself (pick a backend, print, report);
- :mod:`.inputs`: the test samples the network expects (numpy arrays where no torch is needed);
- :mod:`.lava_backend` and :mod:`.torch_backend`: the backends side by side, each returning the same
  run record (:class:`.record.RunRecord`); the Lava one imports no torch, the torch one (NetSim) no Lava;
- :mod:`.verify`: ``mst verify``, Lava against the torch executor of the same file.

Reports (numbers, JSON, Markdown) are written by :mod:`mst_lava.report`.
"""
