import json
import tarfile

import pytest

from conftest import run

SECTIONS = ["versions", "step", "data", "train", "sweep", "torchrun", "compile"]


def check(tmp_path, *args):
    """The check as the device tool runs it: $OUT set, the figures bundled there."""
    bundle = tmp_path / "bundle"
    done = run(["bash", "benchmarks/gpu_check.bash", "--device", "cpu", "--quick", *map(str, args)],
               env={"OUT": str(bundle), "TMPDIR": str(tmp_path)}, check=False)
    return done, bundle, {r["section"]: r for r in json.loads((bundle / "summary.json").read_text())}


@pytest.mark.slow  # every section at tiny sizes: 3 sweep runs, 2 torchrun launches, a compile; ~3 min on 2 cores
def test_quick_check_runs_every_section_and_writes_its_figures(embedded_dir, tmp_path):
    out = tmp_path / "work"
    done, bundle, results = check(tmp_path, "--data-dir", embedded_dir, "--budget", 1200, "--out", out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # What the device tool can bring back (8 files, 16 MiB each): the summaries and one archive of logs and JSONs.
    assert sorted(p.name for p in bundle.iterdir()) == ["gpu_check.tgz", "summary.json", "summary.md"]
    assert (bundle / "gpu_check.tgz").stat().st_size < 16 << 20
    with tarfile.open(bundle / "gpu_check.tgz") as tar:
        names = tar.getnames()
        assert json.load(tar.extractfile("train.json")) == json.loads((out / "train.json").read_text())
    assert "step.json" in names and "sweep/grid.yaml" in names
    assert list(out.rglob("*.safetensors")) and not [n for n in names if n.endswith((".safetensors", ".pt"))]
    assert list(results) == SECTIONS
    for key, r in results.items():
        assert r["status"] == "ok", r
        assert any(c.isdigit() for c in r["figure"]), r
    summary = (out / "summary.md").read_text()
    assert all(f"| {r['title']} | ok |" in summary for r in results.values())
    step = json.loads((out / "step.json").read_text())[0]["methods"]
    assert {"baseline", "ours"} <= set(step) and all(m["tokens_per_s"] > 0 and 0 < m["mfu"] for m in step.values())
    assert "TF32 baseline: skipped, CUDA only" in results["step"]["figure"]
    assert "vs baseline" in results["step"]["ratio"]
    train = json.loads((out / "train.json").read_text())
    # the reloaded checkpoint gives the trainer's logged loss back, and bf16 agrees with fp32 on the same masks
    assert abs(train["recheck"]["fp32"] - train["summary"]["final_valid_log_ppl"]) < 1e-4
    assert abs(train["bf16_minus_fp32"]) <= 1e-2 and train["recheck"]["bf16"] != train["recheck"]["fp32"]
    assert "reuse - scratch" in results["sweep"]["ratio"] and (out / "sweep" / "grid.yaml").is_file()
    assert "x the tokens/s of 1 process" in results["torchrun"]["ratio"]
    assert "compiled vs eager" in results["compile"]["ratio"]


def test_a_failed_section_is_recorded_and_the_others_still_run(tmp_path):
    done, bundle, results = check(tmp_path, "--data-dir", tmp_path / "missing", "--only", "versions", "data", "train",
                                  "torchrun")
    assert done.returncode == 1
    assert [r["status"] for r in results.values()] == ["ok", "FAILED", "SKIPPED", "SKIPPED"]
    assert "lacks en.train.raw.bert-base-uncased.hdf5" in results["data"]["figure"]
    assert results["train"]["figure"] == "no tokenized data (the data section failed)"
    assert "torch " in results["versions"]["figure"]
    assert "| data | FAILED |" in (bundle / "summary.md").read_text()
