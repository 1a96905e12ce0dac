import json

from mst_lava.cli import main


def test_snn_eval_pepper_noise_lowers_accuracy_and_is_reported(tmp_path):
    rep = tmp_path / "rep"
    assert main(["snn-eval", "export/digits.pt", "--n", "24", "--T", "16", "--seeds", "1", "--pepper", "0.3",
                 "--report", str(rep), "--no-plots", "--threads", "1"]) == 0
    r = json.loads((rep / "report.json").read_text())
    (entry,) = r["pepper"]
    clean = r["configs"][0]["accuracy"]["16"]["mean"]
    noisy = entry["accuracy"]["unmasked"]["16"]["mean"]
    assert entry["density"] == 0.3 and noisy < clean
    assert "## Pepper noise" in (rep / "summary.md").read_text()
    assert main(["snn-eval", "export/digits.pt", "--pepper", "1.5", "--report", str(rep)]) == 2
