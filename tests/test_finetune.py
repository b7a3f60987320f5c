"""Downstream evaluation: GLUE readers on each task's own layout, the metrics against hand-computed values, a
fine-tune that learns, the offline next-sentence task, bad input in one line, and downstream in sweeps and reports.

Expected numbers are worked out by hand in the comments beside them, not taken from the code under test.
"""

import csv
import json
import random
import sys

import pytest
import torch
import yaml

from conftest import CACHE, run
from reuse import finetune as ft
from reuse.checkpoint import save_model
from reuse.glue import Examples, GlueError, TASKS, load_task, majority_baseline, metrics, read_tsv, score
from reuse.model import build_model, load_config
from reuse.report import downstream_gains, downstream_lines
from reuse.results import read_results, write_results
from reuse.sweep import SweepError, load_grid


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


MNLI_TRAIN = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
              "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV = MNLI_TRAIN.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
STSB = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
# task: (train lines, dev lines, expected (a, b, labels) of the dev file); labels as class indices in task order
LAYOUTS = {
    "cola": (["gj04\t1\t\tOur friends won't buy this analysis.", "gj04\t0\t*\tThey drank the pub."],
             ["bc01\t0\t*\tThe more you eat, the more heavier.", "bc01\t1\t\tHe left."],
             (["The more you eat, the more heavier.", "He left."], None, [0, 1])),
    "sst2": (["sentence\tlabel", "hide new secretions \t0"],
             ["sentence\tlabel", '" a stray quote opens here\t1', "it 's a charming journey . \t1", "dull\t0"],
             (['" a stray quote opens here', "it 's a charming journey . ", "dull"], None, [1, 1, 0])),
    "mrpc": (["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\tA man runs.\tA man is running."],
             ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", "0\t3\t4\tHe sold \"it\".\tShe bought it."],
             (['He sold "it".'], ["She bought it."], [0])),
    "stsb": ([STSB, "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off.\tAn air plane is "
                    "taking off.\t5.000"],
             [STSB, "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man plays.\tA man sings.\t3.800",
              "1\tmain-news\theadlines\t2013\t0002\tnone\tnone\tStocks fall.\tRain today.\t0.000"],
             (["A man plays.", "Stocks fall."], ["A man sings.", "Rain today."], [3.8, 0.0])),
    "qqp": (["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "1\t3\t4\tHow do I cook?\tHow to cook?\t1"],
            ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "2\t5\t6\tWhy is it blue?\tWho won?\t0"],
            (["Why is it blue?"], ["Who won?"], [0])),
    "qnli": (["index\tquestion\tsentence\tlabel", "0\tWhen?\tIn 1990.\tentailment"],
             ["index\tquestion\tsentence\tlabel", "0\tWho?\tNobody knows where.\tnot_entailment"],
             (["Who?"], ["Nobody knows where."], [1])),
    "rte": (["index\tsentence1\tsentence2\tlabel", "0\tA dog barks.\tAn animal barks.\tentailment"],
            ["index\tsentence1\tsentence2\tlabel", "0\tIt rains.\tIt is dry.\tnot_entailment",
             "1\tHe won.\tHe played.\tentailment"],
            (["It rains.", "He won."], ["It is dry.", "He played."], [1, 0])),
    "wnli": (["index\tsentence1\tsentence2\tlabel", "0\tI saw it.\tIt was seen.\t1"],
             ["index\tsentence1\tsentence2\tlabel", "0\tThe cup fell.\tThe table fell.\t0"],
             (["The cup fell."], ["The table fell."], [0])),
    "next": (["sentence1\tsentence2\tlabel", "A is first.\tB comes next.\t1"],
             ["sentence1\tsentence2\tlabel", "A is first.\tZebras eat grass.\t0"],
             (["A is first."], ["Zebras eat grass."], [0])),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_task_reads_its_own_layout(tmp_path, name):
    task = TASKS[name]
    train, dev, (a, b, labels) = LAYOUTS[name]
    write(tmp_path / task.folder / "train.tsv", train)
    write(tmp_path / task.folder / "dev.tsv", dev)
    _, train_ex, dev_ex = load_task(tmp_path, name)
    assert len(train_ex) == len(train) - task.header  # CoLA's first line is an example, not a header
    assert (dev_ex[""].a, dev_ex[""].b, dev_ex[""].labels) == (a, b, labels)


def test_mnli_reads_train_and_both_dev_files_by_header_names(tmp_path):
    row = "0\t31193\t31193n\tgovernment\t( ( x ) )\t( y )\t(ROOT x)\t(ROOT y)\t"
    write(tmp_path / "MNLI" / "train.tsv", [MNLI_TRAIN, row + "Premise one.\tHypothesis one.\tneutral\tneutral"])
    write(tmp_path / "MNLI" / "dev_matched.tsv",
          [MNLI_DEV, row + "Matched p.\tMatched h.\tentailment\tentailment\tneutral\tentailment\tentailment\t"
                           "entailment"])
    write(tmp_path / "MNLI" / "dev_mismatched.tsv",
          [MNLI_DEV, row + "Mis p.\tMis h.\tcontradiction\tcontradiction\tcontradiction\tneutral\tcontradiction\t"
                           "contradiction"])
    task, train, dev = load_task(tmp_path, "mnli")
    assert train.labels == [2]  # contradiction 0, entailment 1, neutral 2
    assert list(dev) == ["matched_", "mismatched_"]
    assert (dev["matched_"].a, dev["matched_"].b, dev["matched_"].labels) == (["Matched p."], ["Matched h."], [1])
    assert dev["mismatched_"].labels == [0]
    # matched accuracy 1/2, mismatched 2/2: the score is the matched one, both are reported.
    got, parts = score(task, {"matched_": metrics(task, [1, 0], [1, 1]), "mismatched_": metrics(task, [0, 2], [0, 2])})
    assert got == 0.5 and parts == {"matched_accuracy": 0.5, "mismatched_accuracy": 1.0}


@pytest.mark.parametrize("lines,message", [
    (["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\ta\tb"], "dev.tsv line 3: 3 tab-separated"),
    (["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tmaybe"], "dev.tsv line 2: label 'maybe' is not one of "
                                                                "entailment, not_entailment"),
    (["index\tpremise\thypothesis\tlabel", "0\ta\tb\tentailment"], "dev.tsv line 1: the header lacks the column(s) "
                                                                    "sentence1, sentence2"),
    (["index\tsentence1\tsentence2\tlabel"], "dev.tsv has no examples: a dev set cannot be empty"),
])
def test_bad_task_files_name_the_file_and_line(tmp_path, lines, message):
    write(tmp_path / "RTE" / "train.tsv", LAYOUTS["rte"][0])
    write(tmp_path / "RTE" / "dev.tsv", lines)
    with pytest.raises(GlueError, match="RTE") as e:
        load_task(tmp_path, "rte")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_stsb_scores_outside_0_to_5_and_cola_with_a_header_are_refused(tmp_path):
    path = write(tmp_path / "STS-B" / "dev.tsv", [STSB, "0\tg\tf\t2012\t1\tn\tn\ta\tb\t5.5"])
    with pytest.raises(GlueError, match=r"line 2: label '5.5' is not a score in \[0, 5\]"):
        read_tsv(path, TASKS["stsb"])
    path = write(tmp_path / "CoLA" / "dev.tsv", ["index\tsentence", "0\tHe left."])
    with pytest.raises(GlueError, match="line 1: 2 tab-separated fields, expected 4"):
        read_tsv(path, TASKS["cola"])


def test_metrics_match_hand_computed_values():
    # MCC: y 1 1 0 0, p 1 0 0 0 -> TP 1, TN 2, FP 0, FN 1: (1*2 - 0*1) / sqrt(1*2*2*3) = 2 / sqrt(12)
    assert metrics(TASKS["cola"], [1, 1, 0, 0], [1, 0, 0, 0])["mcc"] == pytest.approx(2 / 12 ** 0.5)
    # MRPC: y 1 1 1 0 0, p 1 1 0 1 0 -> TP 2, FP 1, FN 1: F1 2/3; accuracy 3/5; score their mean
    got, parts = score(TASKS["mrpc"], {"": metrics(TASKS["mrpc"], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])})
    assert parts == pytest.approx({"f1": 2 / 3, "accuracy": 0.6}) and got == pytest.approx((2 / 3 + 0.6) / 2)
    # STS-B: y 0 1 2 3, p 0 1 2 4: Pearson 6.5 / sqrt(5 * 8.75); Spearman 1 (same order)
    got, parts = score(TASKS["stsb"], {"": metrics(TASKS["stsb"], [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 4.0])})
    assert parts["pearson"] == pytest.approx(6.5 / (5 * 8.75) ** 0.5) and parts["spearman"] == pytest.approx(1.0)
    assert got == pytest.approx((6.5 / 43.75 ** 0.5 + 1) / 2)
    assert metrics(TASKS["stsb"], [0.0, 1.0, 2.0], [2.5, 2.5, 2.5]) == {"pearson": 0.0, "spearman": 0.0}
    assert metrics(TASKS["sst2"], [0, 1, 1, 1], [1, 1, 1, 1]) == {"accuracy": 0.75}
    assert metrics(TASKS["cola"], [0, 1, 1], [1, 1, 1])["mcc"] == 0.0  # a constant prediction
    # Majority: the training labels 0 1 1 say 1; on dev 1 0 0 0 that scores 1/4.
    train, dev = Examples(a=["x"] * 3, labels=[0, 1, 1]), {"": Examples(a=["x"] * 4, labels=[1, 0, 0, 0])}
    assert majority_baseline(TASKS["rte"], train, dev) == 0.25


# ---------------------------------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 2-layer 64-wide BERT with the bert-base-uncased tokenizer, a GPT-2, and a synthetic task."""
    from reuse.tokenize import load_tokenizer

    d = tmp_path_factory.mktemp("finetune")
    tok = load_tokenizer("bert-base-uncased")
    torch.manual_seed(0)
    save_model(d / "bert", build_model(load_config("configs/bert-2L-64H.json")), tok)
    save_model(d / "gpt2", build_model(load_config("configs/gpt2-2L-64H.json")), tok)
    # A learnable signal a random tiny model picks up in seconds: sentence2 is drawn from one word list when it
    # "follows" (label 1) and from another when not. Dev is 60% label 0, so the majority class scores 0.6.
    rng = random.Random(0)
    common = "the a of city river music team year people house game law war".split()
    follows, other = "sea ship boat water fish wave".split(), "fire king bread gold horse snow".split()

    def example(label):
        return (" ".join(rng.choices(common, k=6)), " ".join(rng.choices(follows if label else other, k=5)), label)
    train = [example(i % 2) for i in range(400)]
    dev = [example(int(i % 5 < 2)) for i in range(100)]
    for name, rows in (("train", train), ("dev", dev)):
        write(d / "glue" / "NEXT" / f"{name}.tsv",
              ["sentence1\tsentence2\tlabel"] + [f"{a}\t{b}\t{y}" for a, b, y in rows])
    return d


def cli(*argv):
    """reuse.finetune's main in this process: (exit status, stderr text) as an interpreter would give them."""
    try:
        ft.main([str(a) for a in argv])
    except SystemExit as e:
        return (e.code if isinstance(e.code, int) else 1), ("" if isinstance(e.code, int) or e.code is None
                                                            else str(e.code))
    return 0, ""


def test_finetune_beats_the_majority_class_and_caches_its_result(tiny, tmp_path, capsys):
    out, rows = tmp_path / "ft", tmp_path / "rows.csv"
    args = [tiny / "bert", "--task", "next", "--glue-dir", tiny / "glue", "--output-dir", out, "--out", rows,
            "--max-steps", 60, "--batch-size", 16, "--lr", "1e-3", "--eval-every", 20, "--threads", 1]
    assert cli(*args) == (0, "")
    result = json.loads((out / "finetune.json").read_text())
    assert result["majority_score"] == pytest.approx(0.6)  # 60 of 100 dev labels are 0
    assert result["best_score"] >= 0.9 and result["final_score"] >= 0.9
    assert [step for step, _ in result["curve"]] == [20, 40, 60] and result["steps"] == 60
    assert result["train_examples"] == 400 and result["dev_examples"] == {"dev": 100}
    assert any((out / "tb").iterdir()) and len((out / "log.jsonl").read_text().splitlines()) == 3
    with open(rows, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 1 and table[0]["task"] == "next" and table[0]["metric"] == "accuracy"
    assert float(table[0]["best_score"]) == result["best_score"]
    assert json.loads(table[0]["best_parts"])["accuracy"] >= 0.9
    capsys.readouterr()
    # The same fine-tune again: recognised, not redone, and its row replaced rather than added.
    assert cli(*args) == (0, "")
    assert "already done" in capsys.readouterr().out
    assert json.loads((out / "finetune.json").read_text())["wall_time_s"] == result["wall_time_s"]
    assert len(list(csv.DictReader(open(rows)))) == 1
    # Another recipe into the same folder is refused; a killed fine-tune's leftovers are cleared and it starts over.
    code, err = cli(*args[:-2], "--seed", 3)
    assert code == 1 and "holds another fine-tune" in err
    (out / "finetune.json").unlink()
    capsys.readouterr()
    assert cli(*args[:7], "--max-steps", 2, "--eval-every", 0) == (0, "")
    assert "starting over from scratch" in capsys.readouterr().out
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # the old log was removed, not appended to


def test_regression_and_two_dev_sets_run_end_to_end(tiny, tmp_path):
    glue = tmp_path / "glue"
    pair = "0\tg\tf\t2012\t1\tn\tn\tthe river\tthe sea\t"
    write(glue / "STS-B" / "train.tsv", [STSB] + [pair + f"{i % 6}.0" for i in range(8)])
    write(glue / "STS-B" / "dev.tsv", [STSB] + [pair + f"{i}.5" for i in range(4)])
    result = ft.finetune(str(tiny / "bert"), ft.FinetuneConfig(task="stsb", glue_dir=str(glue), max_steps=2,
                                                               batch_size=4, output_dir=str(tmp_path / "s")))
    assert result["metric"] == "pearson_spearman_mean" and set(result["final_parts"]) == {"pearson", "spearman"}
    row = "0\t1\t1n\tfiction\tx\ty\tx\ty\tthe river\tthe sea\t"
    write(glue / "MNLI" / "train.tsv", [MNLI_TRAIN] + [row + "e\t" + g for g in ("entailment", "neutral")])
    for name in ("dev_matched", "dev_mismatched"):
        write(glue / "MNLI" / f"{name}.tsv", [MNLI_DEV, row + "a\tb\tc\td\te\tcontradiction"])
    result = ft.finetune(str(tiny / "bert"), ft.FinetuneConfig(task="mnli", glue_dir=str(glue), max_steps=1,
                                                               output_dir=str(tmp_path / "m")))
    assert set(result["final_parts"]) == {"matched_accuracy", "mismatched_accuracy"}
    assert result["final_score"] == result["final_parts"]["matched_accuracy"]


@pytest.mark.parametrize("change,message", [
    (["--task", "glue"], "unknown task 'glue'; the tasks are cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, next"),
    (["--checkpoint-is", "gpt2"], "is a decoder (model_type gpt2), not an encoder"),
    (["--checkpoint-is", "missing"], "does not exist"),
    (["--glue-dir", "{tmp}"], "NEXT/train.tsv does not exist: make it with data/embedded/make_next_sentence_task"),
    (["--max-length", "1000"], "--max-length 1000 exceeds the 512 positions"),
    (["--batch-size", "0"], "--batch-size must be > 0"),
])
def test_bad_input_is_one_line_before_any_work(tiny, tmp_path, change, message):
    checkpoint, args = tiny / "bert", ["--task", "next", "--glue-dir", tiny / "glue"]
    if change[0] == "--checkpoint-is":
        checkpoint = tiny / change[1]
    else:
        args += [c.replace("{tmp}", str(tmp_path)) for c in change]
    code, err = cli(checkpoint, *args, "--output-dir", tmp_path / "out")
    assert code == 1 and message in err and "\n" not in err.strip()
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- next task
def test_next_sentence_task_follows_the_corpus_split(embedded_dir, tmp_path):
    """Train pairs from the corpus's train articles, dev pairs from its valid articles; balanced labels; a
    positive is two consecutive lines of its split's .raw file (articles are kept in order)."""
    done = run([sys.executable, "-m", "reuse.next_task", "--out-dir", str(tmp_path), "--cache-dir", str(CACHE)])
    assert "dev.tsv" in done.stdout
    _, train, dev = load_task(tmp_path, "next")
    for ex, split in ((train, "train"), (dev[""], "valid")):
        lines = (embedded_dir / f"en.{split}.raw").read_text(encoding="utf-8").splitlines()
        consecutive = set(zip(lines, lines[1:]))
        assert set(ex.a) | set(ex.b) <= set(lines)  # every sentence is from this split
        assert ex.labels.count(1) == ex.labels.count(0) > 1000
        pairs = list(zip(ex.a, ex.b, ex.labels))
        assert all((a, b) in consecutive for a, b, y in pairs if y == 1)
        assert sum((a, b) in consecutive for a, b, y in pairs if y == 0) <= 2  # a negative is from another article
    other = set((embedded_dir / "en.train.raw").read_text(encoding="utf-8").splitlines())
    dev_sentences = set(dev[""].a) | set(dev[""].b)
    assert len(dev_sentences & other) <= 2  # only sentences that two articles share word for word


# ---------------------------------------------------------------------------------------------------- sweeps
def downstream_rows(scratch, reuse):
    rows = []
    for method, scores in (("scratch", scratch), ("reuse", reuse)):
        for seed, s in enumerate(scores):
            rows.append({"run_id": f"{method}-{seed}", "model": "bert-2L-128H", "parameters": 2.0e6, "fraction": 0.02,
                         "seed": seed, "method": method, "best_log_ppl": 6.0 + seed, "downstream_next": s,
                         "downstream_next_final": s - 0.01, "downstream_next_majority": 0.5})
    return rows


def test_report_tables_downstream_scores_and_the_paired_reuse_gain(tmp_path):
    # 3 seeds: gains 0.10 0.11 0.09, mean 0.10, s 0.01, t(0.975, 2) = 4.303: half-width 4.303 * 0.01 / sqrt(3)
    rows = downstream_rows([0.50, 0.51, 0.52], [0.60, 0.62, 0.61])
    write_results(rows, tmp_path / "results.csv")
    back = read_results(tmp_path / "results.csv")
    assert back[0]["downstream_next"] == 0.5 and back[0]["downstream_next_majority"] == 0.5
    (gain,) = downstream_gains(back, "next")
    assert gain["gain"][0] == pytest.approx(0.10) and gain["gain"][1] == pytest.approx(4.303 * 0.01 / 3 ** 0.5, 1e-3)
    assert gain["verdict"] == "yes: reuse scores higher" and gain["scratch"][0] == pytest.approx(0.51)
    text = "\n".join(downstream_lines(back))
    assert "## Downstream: next (accuracy on its dev set)" in text and "baseline on the same dev set: 0.5000" in text
    # log-ppl over seeds 6, 7, 8: mean 7, s 1, half 4.303 / sqrt(3) = 2.484; scores 0.51 +- 0.0248
    assert "| 0.02 | bert-2L-128H | 2.00 | scratch | 3 | 7.000 ± 2.484 | 0.5100 ± 0.0248 | 0.5000 ± 0.0248 |" in text
    gain_row = "| 0.02 | 2.00 | 3 | 0.5100 ± 0.0248 | 0.6100 ± 0.0248 | 0.1000 ± 0.0248 | yes: reuse scores higher |"
    assert gain_row in text
    # 2 seeds, gains 0.04 and 0.08: mean 0.06, s 0.0283, t(0.975, 1) = 12.706: half 0.254, contains 0
    (gain,) = downstream_gains(downstream_rows([0.60, 0.62], [0.64, 0.70]), "next")
    assert gain["gain"][1] == pytest.approx(12.706 * 0.02, 1e-3)  # s = 0.02 * sqrt(2), over sqrt(2)
    assert gain["verdict"] == "no: the interval contains 0"


def test_bad_downstream_sections_are_refused_when_the_grid_is_read(tiny, tmp_path):
    from test_sweep import tiny_grid

    def refused(downstream, message, **changes):
        grid = yaml.safe_load(tiny_grid(tmp_path, tmp_path, **changes).read_text())
        grid["downstream"] = downstream
        (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
        with pytest.raises(SweepError, match="grid .*g.yaml: ") as e:
            load_grid(tmp_path / "g.yaml")
        assert message in str(e.value)

    glue = str(tiny / "glue")
    refused({"tasks": ["nope"], "glue_dir": glue}, "unknown task 'nope'; the tasks are cola")
    refused({"tasks": ["next"], "glue_dir": glue, "args": {"learning_rate": 1}}, "['learning_rate'] are not")
    refused({"tasks": ["next"], "glue_dir": glue, "args": {"seed": 1}}, "the sweep sets")
    refused({"tasks": ["next"], "glue_dir": glue, "args": {"lr": "fast"}}, "lr = 'fast' is not a float")
    refused({"tasks": ["rte"], "glue_dir": glue}, "RTE/train.tsv does not exist")
    refused({"tasks": ["next"], "glue_dir": glue}, "configs/gpt2-2L-64H.json is a decoder",
            models=["configs/gpt2-2L-64H.json"], methods={"scratch": {}})
    grid = yaml.safe_load(tiny_grid(tmp_path, tmp_path).read_text())
    grid["downstream"] = {"tasks": ["next"], "glue_dir": glue, "args": {"lr": "1e-3", "max_steps": 5}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    assert load_grid(tmp_path / "g.yaml")["downstream"]["tasks"] == ["next"]  # YAML's text "1e-3" is a float


@pytest.mark.slow  # a one-run sweep and its fine-tune, two processes of their own: ~30 s on 2 idle cores
def test_sweep_fine_tunes_every_checkpoint_and_reports_it(tiny, tmp_path, embedded_dir):
    from test_sweep import sweep, tiny_grid

    from reuse.downstream import run_downstream
    from reuse.sweep import plan

    grid_path = tiny_grid(tmp_path, embedded_dir, models=["configs/bert-2L-64H.json"], methods={"scratch": {}})
    grid = yaml.safe_load(grid_path.read_text())
    grid["downstream"] = {"tasks": ["next"], "glue_dir": str(tiny / "glue"),
                          "args": {"max_steps": 3, "batch_size": 8, "lr": 1.0e-3}}
    grid_path.write_text(yaml.safe_dump(grid))
    done = sweep(grid_path, tmp_path)
    assert "downstream: 0 fine-tunes already done, 1 to run" in done.stdout
    result = json.loads((tmp_path / "snap" / "bert-2L-64H-0.5D" / "downstream-next" / "finetune.json").read_text())
    assert result["checkpoint"].endswith("bert-2L-64H-0.5D/best") and result["seed"] == 0
    (row,) = read_results(tmp_path / "results" / "results.csv")
    assert row["downstream_next"] == result["best_score"] and row["downstream_next_majority"] == pytest.approx(0.6)
    report = (tmp_path / "results" / "report.md").read_text()
    assert "## Downstream: next" in report and f"{result['best_score']:.4f} |" in report
    assert "No reuse gain in next: no width has both" in report  # a scratch-only grid
    # What a re-run of the sweep does, in this process: the cached result is recognised and nothing is started.
    said = []
    results, failed = run_downstream(plan(grid), grid, tmp_path / "snap", {"bert-2L-64H-0.5D": "done"},
                                     progress=said.append)
    assert said == ["downstream: 1 fine-tunes already done, 0 to run"] and failed == []
    assert results[("bert-2L-64H-0.5D", "next")]["best_score"] == result["best_score"]
