"""The GPU path in one prepared command (`bash benchmarks/gpu_check.bash`): every section a subprocess with a time
limit, its figure and its ratio against its peer written to `summary.md` as soon as it ends, so a failure or a
timeout in one section loses only that section, and a GPU window cut short still leaves what was measured.

Sections, in order of what a short window should measure first: versions, the training step at three widths
(benchmarks/bench_train.py: ours in bf16 against the plain-transformers step in bf16 and in TF32 fp32), the data
(the embedded corpus, tokenized), a 200-step reuse.train run whose checkpoint is reloaded and evaluated (bf16 against
fp32 on the same blocks and masks), a 2-width slice of configs/paper.yaml through reuse.sweep --gpus 0, torchrun
with 2 processes, and torch.compile on and off at 640H (last: compiling takes the longest).
`--device cpu --quick` runs the same sections at tiny sizes, to prove the path end to end without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = ["configs/bert-12L-64H.json", "configs/bert-12L-256H.json", "configs/bert-12L-640H.json"]
WIDE = "configs/bert-12L-640H.json"
TOLERANCE = 1e-2  # bf16 against fp32 valid loss (nats), from the issue


class Skip(Exception):
    """A section that cannot run here; the message is the reason."""


def run(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> str:
    """Run from the repository root with output to `log`; on timeout kill the whole process group (torchrun's
    children included). Raises RuntimeError naming the log on failure; returns the output."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"timed out after {timeout:.0f} s (see {log.name})") from None
    if code != 0:
        tail = [line for line in log.read_text().splitlines() if line.strip()][-1:]
        raise RuntimeError(f"exit code {code}: {tail[0][:200] if tail else ''} (see {log.name})")
    return log.read_text()


class Check:
    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.cuda = args.device.startswith("cuda")
        self.quick = args.quick
        self.deadline = time.time() + args.budget
        self.results: list[dict] = []
        self.data: Path | None = None
        self.step_rows: list[dict] = []

    # ---------------------------------------------------------------------------------------- helpers
    def left(self, wanted: float) -> float:
        remaining = self.deadline - time.time()
        if remaining < 10:
            raise Skip(f"out of the {self.args.budget:.0f} s budget")
        return min(wanted, remaining)

    def py(self, *args) -> list[str]:
        return [sys.executable, *map(str, args)]

    def bench(self, name: str, rows: list[str], methods: list[str], timeout: float) -> list[dict]:
        q = self.quick
        cmd = self.py("benchmarks/bench_train.py", "--configs", *rows, "--methods", *methods, "--device",
                      self.args.device, "--batch-size", 8 if q else 256, "--steps", 1 if q else 10,
                      "--rounds", 1 if q else 2, "--json", self.out / f"{name}.json")
        try:
            run(cmd, self.out / f"{name}.log", self.left(timeout))
        finally:  # bench_train writes its JSON after every row: keep the rows measured before a failure
            path = self.out / f"{name}.json"
            self.partial = json.loads(path.read_text()) if path.is_file() else []
        return self.partial

    # ---------------------------------------------------------------------------------------- sections
    def versions(self):
        import torch
        import transformers

        info = {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                "cuda_available": torch.cuda.is_available(), "device": self.args.device}
        if self.cuda:
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda but torch.cuda.is_available() is False (a CPU build of torch?)")
            info.update(name=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                        capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                        cudnn=torch.backends.cudnn.version(), nccl=nccl_version())
            try:
                smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
                (self.out / "nvidia-smi.txt").write_text(smi)
            except (OSError, subprocess.TimeoutExpired):
                pass
        else:
            import platform
            info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
        figure = f"torch {info['torch']}, CUDA {info['cuda']}, {info['name']}" + \
            (f" x{info['gpus']}, NCCL {info['nccl']}" if self.cuda else f", {info['threads']} threads")
        return figure, "no peer", info

    def step(self):
        q = self.quick
        rows = ["configs/bert-2L-64H.json"] if q else WIDTHS
        methods = ["baseline", "ours"] + (["baseline-tf32"] if self.cuda else [])
        try:
            self.step_rows = self.bench("step", rows, methods, 60 * 4)
        except RuntimeError as e:
            self.step_rows = self.partial
            if self.step_rows:
                raise RuntimeError(f"{e}; measured before it: {self.describe_rows(self.step_rows)}") from None
            raise
        figure = self.describe_rows(self.step_rows)
        note = "" if self.cuda else "; TF32 baseline: skipped, CUDA only"
        return figure + note, self.ratios(self.step_rows, "ours", ["baseline", "baseline-tf32"]), self.step_rows

    def describe_rows(self, rows) -> str:
        parts = []
        for r in rows:
            m = r["methods"]
            parts.append(f"{r['row']}: " + ", ".join(
                f"{k} {v['tokens_per_s']:,.0f} tok/s MFU {v['mfu']:.1%}"
                + (f" {v['peak_memory_mib']:,.0f} MiB" if v["peak_memory_mib"] is not None else "")
                for k, v in m.items()))
        return "; ".join(parts) + (f" (matmul peak {rows[0]['matmul_peak_flops'] / 1e12:.3g} TFLOP/s)" if rows else "")

    def ratios(self, rows, ours, peers) -> str:
        out = []
        for r in rows:
            m = r["methods"]
            out.append(f"{r['row']}: " + ", ".join(f"{m[p]['step_s'] / m[ours]['step_s']:.2f}x vs {p}"
                                                    for p in peers if p in m))
        return "; ".join(out)

    def data_section(self):
        names = {s: f"en.{s}.raw.bert-base-uncased.hdf5" for s in ("train", "valid")}
        given = self.args.data_dir or ROOT / "data" / "wiki-embedded"
        if all((given / n).is_file() for n in names.values()):
            self.data = given
            return self.describe_data("found"), "no peer", {"data_dir": str(given)}
        if self.args.data_dir:
            raise RuntimeError(f"--data-dir {given} lacks {' or '.join(names.values())}")
        folder = self.out / "data"
        log = self.out / "data.log"
        run(self.py("-m", "reuse.corpus", "embedded", "--lang", "en", "--out-dir", folder,
                    "--cache-dir", ROOT / "data" / "cache"), log, self.left(180))
        run(self.py("-m", "reuse.tokenize", folder / "en.train.raw", folder / "en.valid.raw"), log, self.left(180))
        self.data = folder
        return self.describe_data("built and tokenized"), "no peer", {"data_dir": str(folder)}

    def describe_data(self, how: str) -> str:
        from reuse.data import inspect_tokens

        sizes = {s: inspect_tokens(self.data / f"en.{s}.raw.bert-base-uncased.hdf5").num_tokens
                 for s in ("train", "valid")}
        return f"embedded English {how} in {self.data}: {sizes['train']:,} train and {sizes['valid']:,} valid tokens"

    def need_data(self):
        if self.data is None:
            raise Skip("no tokenized data (the data section failed)")
        return self.data / "en.train.raw.bert-base-uncased.hdf5", self.data / "en.valid.raw.bert-base-uncased.hdf5"

    def train(self):
        train, valid = self.need_data()
        q = self.quick
        out = self.out / "train"
        steps = 4 if q else 200
        config = "configs/bert-2L-64H.json" if q else WIDE
        cmd = self.py("-m", "reuse.train", "--config", config,
                      "--train-data", train, "--valid-data", valid, "--output-dir", out, "--max-steps", steps,
                      "--eval-every", steps, "--save-every", steps, "--log-every", 1 if q else 20, "--overwrite",
                      "--device", self.args.device, *(["--batch-size", 8, "--eval-batches", 2] if q else []))
        run(cmd, self.out / "train.log", self.left(240))
        summary = json.loads((out / "summary.json").read_text())
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        speed = [r for r in records if "tokens_per_s" in r][1:] or [r for r in records if "tokens_per_s" in r]
        tokens_per_s = sorted(r["tokens_per_s"] for r in speed)[len(speed) // 2]
        mfu = sorted(r["mfu"] for r in speed)[len(speed) // 2]
        # Reloaded in a fresh process: the logged valid loss again, in fp32 and in bf16, on the same blocks and masks.
        recheck = self.out / "train_recheck.json"
        run(self.py(__file__, "--recheck", out, valid, "--device", self.args.device, "--recheck-out", recheck),
            self.out / "train.log", self.left(120))
        same = json.loads(recheck.read_text())
        cli = self.out / "train_evaluate.json"
        run(self.py("-m", "reuse.evaluate", out, "--data", valid, "--device", self.args.device, "--out", cli,
                    *(["--max-batches", 2] if q else [])), self.out / "train.log", self.left(120))
        evaluated = json.loads(cli.read_text())[0]["log_ppl"]
        logged = summary["final_valid_log_ppl"]
        diff = abs(same["bf16"] - same["fp32"])
        info = {"summary": summary, "tokens_per_s": tokens_per_s, "mfu": mfu, "recheck": same,
                "reuse_evaluate_fp32": evaluated, "bf16_minus_fp32": same["bf16"] - same["fp32"]}
        (self.out / "train.json").write_text(json.dumps(info, indent=2))
        ok = diff <= TOLERANCE and abs(same["logged_precision"] - logged) <= 1e-3
        figure = (f"{summary['steps']} steps, {tokens_per_s:,.0f} tok/s, MFU {mfu:.1%}; valid log-ppl logged "
                  f"{logged:.4f} ({'bf16' if self.cuda else 'fp32'}), reloaded: fp32 {same['fp32']:.4f}, bf16 "
                  f"{same['bf16']:.4f} (same blocks and masks), bf16 - fp32 = {same['bf16'] - same['fp32']:+.1e}, "
                  f"{'within' if diff <= TOLERANCE else 'OUTSIDE'} {TOLERANCE}; `reuse.evaluate` (fp32, the original "
                  f"protocol's masks) {evaluated:.4f}")
        peer = next((r for r in self.step_rows if r["config"] == config), None)  # same model and batch
        ratio = (f"{tokens_per_s / peer['methods']['ours']['tokens_per_s']:.2f}x the tokens/s of the bare step "
                 f"(step section)" if peer else "no peer: the step section did not measure this model")
        if not ok:
            raise RuntimeError(f"bf16 and fp32 disagree, or the reload does not reproduce the logged loss: {figure}")
        return figure, ratio, info

    def sweep(self):
        train, valid = self.need_data()
        q = self.quick
        folder = self.out / "sweep"
        folder.mkdir(exist_ok=True)
        paper = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
        steps = 3 if q else 300
        grid = {
            "name": "gpu_check_slice",
            "protocol": paper["protocol"],
            "family": paper["family"],
            # Two widths of the paper's ladder (2-layer stand-ins in --quick); the paper's fractions of full
            # Wikipedia hold fewer blocks of the embedded corpus than one batch, so one fraction of it instead.
            "models": ["configs/bert-2L-64H.json", "configs/bert-2L-128H.json"] if q else paper["models"][:2],
            # protocol paper refuses a budget under one epoch: 0.2% is one batch of 8 blocks in --quick
            "fractions": [0.002 if q else 0.2],
            "seeds": [0],
            "train_data": str(train), "valid_data": str(valid),
            # paper.yaml's 10k warm-up steps would outlast the slice: 6% of its steps instead
            "train": {**paper["train"], "max_steps": steps, "warmup_steps": None, "warmup_fraction": 0.06,
                      "eval_every": steps if q else 100,
                      "save_every": steps, "eval_batches": 2 if q else 10, "device": self.args.device,
                      **({"batch_size": 8} if q else {})},
            "methods": paper["methods"],
        }
        path = folder / "grid.yaml"
        path.write_text("# A slice of configs/paper.yaml written by benchmarks/gpu_check.py\n" + yaml.safe_dump(grid))
        start = time.time()
        run(self.py("-m", "reuse.sweep", path, "--gpus", "0", "--snap", folder / "snap", "--results",
                    folder / "results"), self.out / "sweep.log", self.left(240))
        wall = time.time() - start
        import csv
        with open(folder / "results" / "results.csv") as f:
            rows = list(csv.DictReader(f))
        best = {(r["model"], r["method"]): float(r["best_log_ppl"]) for r in rows}
        figure = f"{len(rows)} runs in {wall:.0f} s; best valid log-ppl " + ", ".join(
            f"{m} {k} {v:.3f}" for (m, k), v in sorted(best.items()))
        gains = [f"{m}: reuse - scratch {best[(m, 'reuse')] - best[(m, 'scratch')]:+.3f} nats"
                 for m in sorted({m for m, _ in best}) if (m, "reuse") in best and (m, "scratch") in best]
        return figure, "; ".join(gains) or "no reuse/scratch pair", {"rows": rows, "wall_s": wall}

    def torchrun(self):
        import torch
        if self.cuda and torch.cuda.device_count() < 2:
            raise Skip(f"{torch.cuda.device_count()} GPU: reuse.train puts rank i on cuda:i (LOCAL_RANK) and NCCL "
                       f"refuses two ranks on one device; needs 2 GPUs")
        train, _ = self.need_data()
        q = self.quick
        common = ["--config", "configs/bert-2L-64H.json" if q else "configs/bert-12L-64H.json", "--train-data", train,
                  "--max-steps", 4 if q else 50, "--dropout", 0, "--log-every", 1, "--overwrite",
                  "--device", self.args.device, *(["--batch-size", 8, "--threads", 1] if q else [])]
        log = self.out / "torchrun.log"
        # the one-process peer accumulates over two micro-batches of the per-rank share, as the 2 ranks split it
        run(self.py("-m", "reuse.train", *common, "--output-dir", self.out / "torchrun-1",
                    "--micro-batch-size", 4 if q else 128), log, self.left(120))
        run(self.py("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2, "-m", "reuse.train",
                    *common, "--output-dir", self.out / "torchrun-2"), log, self.left(120))
        one, two = (self.losses(self.out / f"torchrun-{n}") for n in (1, 2))
        speed = [json.loads((self.out / f"torchrun-{n}" / "summary.json").read_text()) for n in (1, 2)]
        rates = [s["tokens_seen"] / s["wall_time_s"] for s in speed]
        diff = max(abs(a - b) for a, b in zip(one, two))
        tolerance = 1e-4 if not self.cuda else 2e-2  # bf16: different reduction orders
        figure = (f"{len(two)} steps on 2 processes ({'NCCL' if self.cuda else 'gloo'}), {rates[1]:,.0f} tok/s; "
                  f"largest loss difference from 1 process {diff:.2e} (tolerance {tolerance:g})")
        if len(one) != len(two) or diff > tolerance:
            raise RuntimeError(f"2 processes do not reproduce 1: {figure}")
        return figure, f"{rates[1] / rates[0]:.2f}x the tokens/s of 1 process", {"one": one, "two": two,
                                                                                  "tokens_per_s": rates}

    @staticmethod
    def losses(folder: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines()
                if "loss" in json.loads(line)]

    def compile(self):
        rows = self.bench("compile", ["configs/bert-2L-64H.json" if self.quick else WIDE], ["ours", "ours-compile"],
                          60 * 5)
        m = rows[0]["methods"]
        figure = (f"{rows[0]['row']}: eager {m['ours']['tokens_per_s']:,.0f} tok/s (MFU {m['ours']['mfu']:.1%}), "
                  f"compiled {m['ours-compile']['tokens_per_s']:,.0f} tok/s (MFU {m['ours-compile']['mfu']:.1%}), "
                  f"first two compiled steps (compiling) {m['ours-compile']['first_call_s']:.0f} s")
        return figure, f"{m['ours']['step_s'] / m['ours-compile']['step_s']:.2f}x compiled vs eager", rows

    # ---------------------------------------------------------------------------------------- driver
    SECTIONS = [("versions", "versions"), ("step", "training step, 3 widths"), ("data", "data"),
                ("train", "reuse.train 200 steps + reload"), ("sweep", "paper.yaml slice via reuse.sweep --gpus 0"),
                ("torchrun", "torchrun --nproc_per_node 2"), ("compile", "--compile on/off at 640H")]

    def main(self):
        self.out.mkdir(parents=True, exist_ok=True)
        start = time.time()
        for key, title in self.SECTIONS:
            if self.args.only and key not in self.args.only:
                continue
            t0 = time.time()
            fn = self.data_section if key == "data" else getattr(self, key)
            try:
                figure, ratio, details = fn()
                status = "ok"
            except Skip as e:
                status, figure, ratio, details = "SKIPPED", str(e), "", None
            except Exception as e:  # a section's failure is recorded and the next section still runs
                status, figure, ratio, details = "FAILED", f"{type(e).__name__}: {e}", "", None
                (self.out / f"{key}.log").open("a").write(traceback.format_exc())
            result = {"section": key, "title": title, "status": status, "figure": figure, "ratio": ratio,
                      "seconds": round(time.time() - t0, 1)}
            self.results.append(result)
            print(f"[{status}] {title} ({result['seconds']:.0f} s): {figure}" + (f" | {ratio}" if ratio else ""),
                  flush=True)
            if details is not None:
                (self.out / f"{key}_details.json").write_text(json.dumps(details, indent=2, default=str))
            self.write_summary(time.time() - start)
        failed = [r["section"] for r in self.results if r["status"] == "FAILED"]
        print(f"summary in {self.out / 'summary.md'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0

    def write_summary(self, wall: float):
        lines = [f"# GPU check ({'--quick, ' if self.quick else ''}device {self.args.device})", "",
                 f"`bash benchmarks/gpu_check.bash {' '.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d %H:%M')}, "
                 f"{wall:.0f} s so far.", "", "| section | status | s | figure | ratio against its peer |",
                 "| --- | --- | --- | --- | --- |"]
        for r in self.results:
            cells = [r["title"], r["status"], f"{r['seconds']:.0f}", r["figure"], r["ratio"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        (self.out / "summary.md").write_text("\n".join(lines) + "\n")
        (self.out / "summary.json").write_text(json.dumps(self.results, indent=2))
        if self.args.bundle:
            self.write_bundle(self.args.bundle)

    BUNDLE_SKIPS = (".safetensors", ".bin", ".pt", ".hdf5", ".raw", ".line")

    def write_bundle(self, folder: Path):
        """The figures in a few small files (after every section, so a killed run keeps what it measured): the
        summaries, and gpu_check.tgz with every log and JSON file; weights, optimizer states, tensorboard files and
        data stay out. The device tool brings back at most 8 files, 2 folders deep, 16 MiB each."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("summary.md", "summary.json"):
            (folder / name).write_bytes((self.out / name).read_bytes())
        with tarfile.open(folder / "gpu_check.tgz.tmp", "w:gz") as tar:
            for path in sorted(self.out.rglob("*")):
                relative = path.relative_to(self.out)
                if (path.is_file() and not path.name.endswith(self.BUNDLE_SKIPS) and "tb" not in relative.parts
                        and relative.parts[0] != "data" and path.stat().st_size <= 1 << 20):
                    tar.add(path, arcname=str(relative))
        (folder / "gpu_check.tgz.tmp").replace(folder / "gpu_check.tgz")


def nccl_version() -> str:
    import torch
    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError) as e:
        return f"unknown ({e})"
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def recheck(args) -> None:
    """The trainer's last valid evaluation redone on the reloaded checkpoint: the same blocks and masks, in fp32 and
    in bf16 autocast (and in the trainer's own precision, which must give its logged number back)."""
    import torch

    from reuse.data import load_blocks
    from reuse.evaluate import evaluate_blocks
    from reuse.model import load_model
    from reuse.tokenize import load_tokenizer

    folder, valid = args.recheck
    config = json.loads((Path(folder) / "run_config.json").read_text())
    device = torch.device(args.device)
    model = load_model(folder).to(device)
    tokenizer = load_tokenizer(str(folder))
    blocks = load_blocks(valid, config["block_size"])[:config["eval_batches"] * config["eval_batch_size"]]
    result = {name: evaluate_blocks(model, blocks, tokenizer, device, config["eval_batch_size"],
                                    autocast_dtype=dtype)["log_ppl"]
              for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))}
    trained_bf16 = device.type == "cuda" and config["bf16"]
    result["logged_precision"] = result["bf16" if trained_bf16 else "fp32"]
    Path(args.recheck_out).write_text(json.dumps(result, indent=2))


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a few steps (CPU: ~2 min)")
    parser.add_argument("--out", type=Path, help="where everything goes, checkpoints included (default "
                                                 "results/gpu_check; with --bundle a fresh temporary folder)")
    parser.add_argument("--bundle", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                        help="also write the figures there as summary.md, summary.json and gpu_check.tgz (logs and "
                             "JSON files, no weights or data); default $OUT, the device tool's folder")
    parser.add_argument("--data-dir", type=Path, help="folder with en.{train,valid}.raw.bert-base-uncased.hdf5 "
                                                      "(default data/wiki-embedded, else built into --out/data)")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all sections together")
    parser.add_argument("--only", nargs="+", choices=[k for k, _ in Check.SECTIONS], help="run these sections only")
    parser.add_argument("--recheck", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--recheck-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recheck:
        return recheck(args)
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: use cuda or cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here; use --device cpu --quick")
    # A fresh folder under --bundle: a reused one would hand the sweep its finished runs and old rows to the others.
    args.out = (args.out or (Path(tempfile.mkdtemp(prefix="gpu_check-")) if args.bundle
                             else ROOT / "results" / "gpu_check")).resolve()
    sys.exit(Check(args).main())


if __name__ == "__main__":
    main()
