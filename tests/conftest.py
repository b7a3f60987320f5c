import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The embedded wheel is downloaded once into the repository's (ignored) cache and reused by every later run.
CACHE = ROOT / "data" / "cache"


def run(cmd, env=None, check=True, **kw):
    """Run a command from the repository root; return the CompletedProcess (stdout and stderr as text)."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def run_main(main, argv, prog: str, check=True) -> subprocess.CompletedProcess:
    """A command-line tool's main run in this process, with what `run` would give for `python -m <prog>`: a fresh
    interpreter costs ~4 s of CPU in imports alone, which dozens of runs multiply. An uncaught SystemExit is treated
    as the interpreter treats it (a string goes to stderr with status 1); any other exception is the test's failure.
    """
    argv = [str(a) for a in argv]
    out, err, code = io.StringIO(), io.StringIO(), 0
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    sys.argv = [prog, *argv]  # what the tool records as its command line (command.txt)
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(argv)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            err.write(stop.code + "\n")
        code = 1 if isinstance(stop.code, str) else (stop.code or 0)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    done = subprocess.CompletedProcess([prog, *argv], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{prog} {argv} failed ({code}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory):
    """The embedded English corpus, split and tokenized for BERT (bert-base-uncased) once per test run.

    Under pytest-xdist each worker has its own session: the first worker builds the folder in the run's shared
    temporary root while holding a lock, and the others wait for it and read the same files."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    out = shared / "wiki-embedded"
    with FileLock(str(shared / "wiki-embedded.lock")):
        if not (out / "complete").is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            run([sys.executable, "-m", "reuse.corpus", "embedded", "--lang", "en", "--out-dir", str(out),
                 "--cache-dir", str(CACHE)])
            run([sys.executable, "-m", "reuse.tokenize",
                 *(str(out / f"en.{s}.raw") for s in ("train", "valid", "test"))])
            (out / "complete").touch()
    return out


@pytest.fixture(scope="session")
def bert_tokenizer():
    from reuse.tokenize import load_tokenizer
    return load_tokenizer("bert-base-uncased")
