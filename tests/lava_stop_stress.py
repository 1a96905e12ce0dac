"""Stress script for LavaSession.stop (run by tests/test_lava_stop.py in a subprocess, so that a
crash shows as an exit status instead of killing pytest).

    python tests/lava_stop_stress.py --rounds 6 --busy 2 [--net chain|digits|digits-layer]

Keeps the machine oversubscribed with ``--busy`` spinning sibling processes, then, round after
round, builds a small Lava network, runs it and stops it at a different moment and with a
different patience each round: Lava's own stop with no time at all (hard stop while the
handshake is in flight), a few milliseconds, enough; after an interrupt; started but never
run; stopped while another thread is still running it. After every stop it checks that no
child of this process is left and that none of the session's shared-memory segments is left
in /dev/shm. Prints one line per round and ``OK`` at the end; exits 1 on a failed check.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import mst_lava.lava  # noqa: E402,F401
from mst_lava.lava import session as S  # noqa: E402

# (name, stop timeout, how): how = run | interrupt | idle | thread
MODES = [("hard-0", 0.0, "run"), ("hard-2ms", 0.002, "run"), ("hard-20ms", 0.02, "run"),
         ("graceful", None, "run"), ("interrupt", None, "interrupt"), ("never-ran", None, "idle"),
         ("hard-50ms", 0.05, "run"), ("run-thread", 0.0, "thread")]


def chain_network():
    """Encoder → 3 IF populations: 4 Lava processes."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    from mst_lava.lava import models as M
    from mst_lava.lava import process as P
    T = 10 ** 6
    enc = P.InputEncoder(data=np.ones((1, 4)), shape=(4,), T=T)
    nrns = [P.IFNeuron(shape=(4,), vth=1.0, T=T) for _ in range(3)]
    enc.out.connect(nrns[0].a_in)
    for a, b in zip(nrns, nrns[1:]):
        a.s_out.connect(b.a_in)
    models = {enc: M.PyInputEncoderModelFloat, **{n: M.PyIFNeuronModelFloat for n in nrns}}
    return nrns[-1], Loihi2SimCfg(select_tag="floating_pt", exception_proc_model_map=models)


def digits_network(granularity: str):
    """A random digits MST, RSM on Q, K, A (block: 28 processes; layer: over 100)."""
    import torch

    from mst_lava.export import export_model
    from mst_lava.lava.builder import build_network
    from mst_lava.model import build_model
    torch.manual_seed(0)
    model = build_model("digits").eval()
    g = export_model(model, precision="fixed", mask=["Q=0.5", "K=0.5", "A=0.5"], seed=11)
    x = torch.randn((2,) + tuple(g.layers[0].shape), generator=torch.Generator().manual_seed(1)).numpy()
    net = build_network(g, x, 64, precision="fixed", granularity=granularity)
    return net.root, net.run_config()


def busy_siblings(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def lava_children(exclude: set[int]) -> list[int]:
    out = []
    for pid in S.descendant_pids():
        if pid in exclude:
            continue
        cmd = S._cmdline(pid) or b""
        if b"resource_tracker" not in cmd:
            out.append(pid)
    return out


def one_round(i: int, net: str, exclude: set[int], names: list[str]) -> str:
    label, timeout, how = MODES[i % len(MODES)]
    root, cfg = chain_network() if net == "chain" else digits_network("layer" if net == "digits-layer" else "block")
    sess = S.LavaSession(root, cfg, stop_timeout=timeout)
    del names[:]
    t0 = time.perf_counter()
    runner = None
    if how == "idle":
        sess.start()
    elif how == "thread":
        sess.start()
        sess.run(3)
        runner = threading.Thread(target=lambda: _swallow(sess.run, 10 ** 5), daemon=True)
        runner.start()
        time.sleep(0.2)
    else:
        sess.run(5 + i % 7)
    if how == "interrupt":
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sess.stop()                     # as from a `finally` during Ctrl-C: no handshake
    else:
        sess.stop()
    stop_s = sess.stop_s
    # checks: no child, no segment of this session left
    deadline = time.monotonic() + 5.0
    left = lava_children(exclude)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = lava_children(exclude)
    shm = [n for n in names if (S.SHM_DIR / n).exists()]
    if left or shm or not names:
        print(f"FAIL round {i} ({label}): children left {left}, segments left {shm}, segments made {len(names)}",
              flush=True)
        sys.exit(1)
    return (f"round {i:2d} {label:10s} {sess.stop_mode:8s} {len(names):3d} segments, "
            f"{time.perf_counter() - t0:6.2f} s in all, stop {stop_s:5.2f} s")


def _swallow(fn, *a):
    try:
        fn(*a)
    except BaseException:  # noqa: BLE001 - the run is cut short by the stop on purpose
        pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=len(MODES))
    ap.add_argument("--busy", type=int, default=2, help="spinning sibling processes")
    ap.add_argument("--net", choices=("chain", "digits", "digits-layer"), default="chain")
    args = ap.parse_args()
    names: list[str] = []
    original = S._record_segment

    def record(name):                       # the test sees every segment the session creates
        names.append(name)
        original(name)
    S._record_segment = record
    busy = busy_siblings(args.busy)
    try:
        exclude = {p.pid for p in busy}
        for i in range(args.rounds):
            print(one_round(i, args.net, exclude, names), flush=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    print(f"OK {args.rounds} rounds, {len(S._PINNED)} mappings kept", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
