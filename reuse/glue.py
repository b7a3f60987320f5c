"""GLUE tasks as the usual download script lays them out (`DIR/CoLA/train.tsv`, ...), their readers and metrics,
plus this project's offline task `next` (`DIR/NEXT/`, made by data/embedded/make_next_sentence_task.bash).

Each task names its folder, its train and dev files, how a line gives (sentence A, sentence B or None, label), and
its label set. Files are read with csv and QUOTE_NONE: GLUE's TSVs are not quoted, but their sentences hold stray
`"` characters that a quoting reader would take for field delimiters and so merge lines. Every data line must have
the header's number of fields and a label in the task's set; otherwise the error names the file and the line.

Metrics are scikit-learn's (matthews_corrcoef, f1_score, accuracy_score) and scipy's (pearsonr, spearmanr). A task's
score is GLUE's: CoLA MCC; SST-2, QNLI, RTE, WNLI, NEXT accuracy; MRPC and QQP the mean of F1 and accuracy; STS-B
the mean of Pearson and Spearman; MNLI the matched accuracy (mismatched reported beside it).
"""

from __future__ import annotations

import csv
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BINARY = ("0", "1")
NLI = ("entailment", "not_entailment")


class GlueError(Exception):
    """A task or task file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Task:
    name: str
    folder: str
    metric: str                    # the name of the task's score
    columns: tuple                 # (sentence A, sentence B or None, label): header names, or indices if headerless
    labels: tuple = ()             # the label strings in class order; () for regression
    dev: tuple = (("", "dev.tsv"),)  # (part prefix, file) per dev set; MNLI has two
    header: bool = True
    width: int = 0                 # fields per line of a headerless file

    @property
    def regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1


TASKS = {t.name: t for t in [
    # CoLA's train and dev files have no header: source, label, the author's judgement (* or empty), sentence.
    Task("cola", "CoLA", "mcc", (3, None, 1), BINARY, header=False, width=4),
    Task("sst2", "SST-2", "accuracy", ("sentence", None, "label"), BINARY),
    Task("mrpc", "MRPC", "f1_accuracy_mean", ("#1 String", "#2 String", "Quality"), BINARY),
    Task("stsb", "STS-B", "pearson_spearman_mean", ("sentence1", "sentence2", "score")),
    Task("qqp", "QQP", "f1_accuracy_mean", ("question1", "question2", "is_duplicate"), BINARY),
    Task("mnli", "MNLI", "matched_accuracy", ("sentence1", "sentence2", "gold_label"),
         ("contradiction", "entailment", "neutral"),
         dev=(("matched_", "dev_matched.tsv"), ("mismatched_", "dev_mismatched.tsv"))),
    Task("qnli", "QNLI", "accuracy", ("question", "sentence", "label"), NLI),
    Task("rte", "RTE", "accuracy", ("sentence1", "sentence2", "label"), NLI),
    Task("wnli", "WNLI", "accuracy", ("sentence1", "sentence2", "label"), BINARY),
    # The offline task: does sentence2 follow sentence1 in the same article (1) or come from another one (0)?
    Task("next", "NEXT", "accuracy", ("sentence1", "sentence2", "label"), BINARY),
]}


@dataclass
class Examples:
    a: list[str] = field(default_factory=list)
    b: list[str] | None = None
    labels: list = field(default_factory=list)  # class indices, or floats for regression

    def __len__(self) -> int:
        return len(self.labels)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise GlueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return TASKS[name]


def task_file(glue_dir: str | Path, task: Task, name: str) -> Path:
    path = Path(glue_dir) / task.folder / name
    if not path.is_file():
        hint = ("make it with data/embedded/make_next_sentence_task.bash" if task.name == "next"
                else "download GLUE with data/glue/get_glue.bash")
        raise GlueError(f"{path} does not exist: {hint}")
    return path


def read_tsv(path: str | Path, task: Task) -> Examples:
    """One task file: its sentences and labels, checked line by line."""
    path = Path(path)
    csv.field_size_limit(sys.maxsize)  # a few GLUE sentences run past csv's 128 kB default
    # utf-8-sig: MRPC's header keeps the byte-order mark of Microsoft's original file ("\ufeffQuality").
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task.header:
            header = next(rows, None)
            if header is None:
                raise GlueError(f"{path} is empty: it needs a header line naming the columns")
            missing = [c for c in task.columns if c is not None and c not in header]
            if missing:
                raise GlueError(f"{path} line 1: the header lacks the column(s) {', '.join(missing)} of task "
                                f"{task.name} (it has {', '.join(header[:12])})")
            index = [header.index(c) if c is not None else None for c in task.columns]
            width = len(header)
        else:
            index, width = list(task.columns), task.width
        ex = Examples(b=[] if index[1] is not None else None)
        for fields in rows:
            line = rows.line_num
            if not fields:
                continue  # a blank line (the file's last, written by some tools)
            if len(fields) != width:
                raise GlueError(f"{path} line {line}: {len(fields)} tab-separated fields, expected {width} for "
                                f"task {task.name}")
            ex.a.append(fields[index[0]])
            if ex.b is not None:
                ex.b.append(fields[index[1]])
            ex.labels.append(parse_label(fields[index[2]], task, path, line))
    return ex


def parse_label(text: str, task: Task, path: Path, line: int):
    if task.regression:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 5.0:  # STS-B's similarity scale; NaN fails the comparison too
            raise GlueError(f"{path} line {line}: label {text!r} is not a score in [0, 5] (task {task.name})")
        return value
    if text not in task.labels:
        raise GlueError(f"{path} line {line}: label {text!r} is not one of {', '.join(task.labels)} "
                        f"(task {task.name})")
    return task.labels.index(text)


def load_task(glue_dir: str | Path, name: str) -> tuple[Task, Examples, dict[str, Examples]]:
    """(task, train examples, {part prefix: dev examples}); an empty train or dev file is an error."""
    task = get_task(name)
    train = read_tsv(task_file(glue_dir, task, "train.tsv"), task)
    dev = {prefix: read_tsv(task_file(glue_dir, task, file), task) for prefix, file in task.dev}
    for (prefix, file), examples in zip(task.dev, dev.values()):
        if not examples:
            raise GlueError(f"{Path(glue_dir) / task.folder / file} has no examples: a dev set cannot be empty")
    if not train:
        raise GlueError(f"{Path(glue_dir) / task.folder / 'train.tsv'} has no examples")
    return task, train, dev


# ---------------------------------------------------------------------------------------------------- metrics
def correlation(fn, x, y) -> float:
    """Pearson or Spearman; 0 for constant input, where the correlation is undefined (scipy returns NaN), as
    scikit-learn's MCC does for a constant prediction: no association can be seen."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(x, y)[0])


def metrics(task: Task, labels, predictions) -> dict[str, float]:
    """The task's parts on one dev set (predictions: class indices, or scores for regression)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    y, p = np.asarray(labels), np.asarray(predictions)
    if task.regression:
        return {"pearson": correlation(pearsonr, p, y), "spearman": correlation(spearmanr, p, y)}
    if task.metric == "mcc":
        return {"mcc": float(matthews_corrcoef(y, p))}
    if task.metric == "f1_accuracy_mean":
        return {"f1": float(f1_score(y, p, pos_label=1, zero_division=0.0)), "accuracy": float(accuracy_score(y, p))}
    return {"accuracy": float(accuracy_score(y, p))}


def score(task: Task, dev_parts: dict[str, dict[str, float]]) -> tuple[float, dict[str, float]]:
    """(the task's score, every part named with its dev set's prefix) from the metrics of each dev set."""
    parts = {prefix + name: value for prefix, values in dev_parts.items() for name, value in values.items()}
    if task.metric == "f1_accuracy_mean":
        return (parts["f1"] + parts["accuracy"]) / 2, parts
    if task.metric == "pearson_spearman_mean":
        return (parts["pearson"] + parts["spearman"]) / 2, parts
    return parts[task.metric], parts


def majority_baseline(task: Task, train: Examples, dev: dict[str, Examples]) -> float:
    """The score of always predicting the most frequent training label (the training mean for STS-B)."""
    if task.regression:
        constant = float(np.mean(train.labels))
    else:
        constant = int(np.bincount(train.labels, minlength=task.num_labels).argmax())
    return score(task, {prefix: metrics(task, ex.labels, [constant] * len(ex)) for prefix, ex in dev.items()})[0]
