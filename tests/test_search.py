import json

from mst_lava.cli import main
from mst_lava.search import greedy_search


def fake_scorer(costs, sens):
    """ops fall by costs[site]·r, accuracy by sens[site]·r (points): a search problem with a known answer."""
    def score(mask):
        ops = 100.0 - sum(costs[s] * r for s, r in mask.items())
        acc = 90.0 - sum(sens[s] * r for s, r in mask.items())
        return {"acc": acc, "acc_std": 0.0, "synops": ops, "dynamic_products": 0.0, "ops": ops}
    return score


def test_greedy_search_respects_budget_and_prefers_cheap_sites():
    score = fake_scorer(costs={"Q": 10, "K": 10, "MLP1": 40}, sens={"Q": 0.1, "K": 0.2, "MLP1": 5.0})
    mask, trace = greedy_search(score, ["Q", "K", "MLP1"], [0.25, 0.5, 0.75, 0.9], budget=0.3, progress=False)
    # Q and K are cheap in accuracy: both go to the top level (loss 0.09 + 0.18 = 0.27 ≤ 0.3);
    # MLP1 saves most ops but its smallest step costs 1.25 points, over the budget
    assert mask == {"Q": 0.9, "K": 0.9}
    assert 90.0 - score(mask)["acc"] <= 0.3
    assert [t["ops"] for t in trace] == sorted((t["ops"] for t in trace), reverse=True)


def test_greedy_search_with_zero_budget_masks_nothing_costly():
    score = fake_scorer(costs={"Q": 10}, sens={"Q": 1.0})
    mask, _ = greedy_search(score, ["Q"], [0.5], budget=0.0, progress=False)
    assert mask == {}


def test_rsm_search_cli_end_to_end(tmp_path):
    out = tmp_path / "s.json"
    assert main(["rsm-search", "export/digits.pt", "--T", "4", "--seeds", "1", "--final-seeds", "1",
                 "--search-n", "8", "--n", "8", "--sites", "Q,K", "--levels", "0.5", "--budget", "99",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["test"]) == {"unmasked", "search", "uniform"} and r["test_samples"] == 8
    assert main(["rsm-search", "export/digits.pt", "--budget", "-1", "--out", str(out)]) == 2


def test_rsm_search_resume_replays_scored_candidates(tmp_path, monkeypatch):
    """An interrupted search keeps its scored candidates in OUT.progress.json; --resume replays them
    (no simulation) and ends with the result of an uninterrupted run."""
    import mst_lava.search as search
    import mst_lava.snn as snn
    args = ["rsm-search", "export/digits.pt", "--T", "4", "--seeds", "1", "--final-seeds", "1", "--search-n", "8",
            "--n", "8", "--sites", "Q,K", "--levels", "0.5", "--budget", "99", "--attention", "compensated",
            "--threads", "1"]
    calls = []
    real_sim = snn.simulate
    monkeypatch.setattr(snn, "simulate", lambda *a, **k: calls.append(1) or real_sim(*a, **k))
    fresh = tmp_path / "fresh.json"
    assert main(args + ["--out", str(fresh)]) == 0
    n_fresh = len(calls)
    assert not (tmp_path / "fresh.json.progress.json").exists()

    real_greedy = search.greedy_search

    def interrupted(score, *a, **k):
        score({})
        score({"Q": 0.5})
        raise KeyboardInterrupt
    out = tmp_path / "s.json"
    monkeypatch.setattr(search, "greedy_search", interrupted)
    assert main(args + ["--out", str(out)]) == 130                   # as Ctrl-C ends a command
    progress = tmp_path / "s.json.progress.json"
    assert len(json.loads(progress.read_text())["phases"]["search"]["runs"]) == 2 and not out.exists()
    monkeypatch.setattr(search, "greedy_search", real_greedy)
    assert main(args + ["--out", str(out)]) == 2                       # refuses to overwrite the progress
    other = [w if w != "compensated" else "paper" for w in args]
    assert main(other + ["--out", str(out), "--resume"]) == 2          # other settings: refused
    calls.clear()
    assert main(args + ["--out", str(out), "--resume"]) == 0
    assert len(calls) == n_fresh - 2           # one batch, one seed: one simulation per candidate replayed
    a, b = json.loads(fresh.read_text()), json.loads(out.read_text())
    assert a["mask"] == b["mask"] and a["test"] == b["test"] and a["trace"] == b["trace"]
    assert not progress.exists()
