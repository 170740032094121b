"""Bad input through real notebook kernels: a key in an endpoint URL reaches no file; Ctrl-C or
SIGTERM leaves a clean message, an `interrupted` stage and no kernel behind; a notebook run by hand
is never taken for another config's run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from embedtune import paths
from embedtune.runner import StageError, run_experiment

KEY = "sk-DUMMY-0123456789abcdef"


@pytest.fixture
def tiny_params(tmp_path, tiny_beir):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)},
                                    "results_dir": str(tmp_path / "results")}))
    return path


@pytest.mark.slow  # 2 min (decide and pairs in real kernels): out of `make test` for time; .ci/run runs it
def test_a_key_in_the_endpoint_url_reaches_no_file(tiny_params, tmp_path):
    run = tmp_path / "results" / "tiny"
    overrides = {"synthetic.backend": "openai", "synthetic.endpoint.base_url": f"http://127.0.0.1:9/v1?key={KEY}",
                 "synthetic.endpoint.model": "m", "synthetic.endpoint.api_key_env": None,
                 "synthetic.endpoint.max_retries": 0, "synthetic.max_docs": 2,
                 "pairs.sources": ["gold", "synthetic"],
                 "decide.pilot": False}  # the pilot's fine-tunes (most of this test's time) touch no endpoint
    with pytest.raises(StageError, match=r"127\.0\.0\.1:9/v1/chat/completions failed") as info:
        run_experiment(tiny_params, stages=["decide", "pairs"], overrides=overrides, run_dir=run,
                       progress=False)
    assert KEY not in str(info.value)
    assert "key=REDACTED" in (run / "params.yaml").read_text()  # decide finished: its params, redacted
    assert (run / "01_pairs.failed.ipynb").is_file()
    written = [p for root in (run, paths.cache_dir()) for p in root.rglob("*") if p.is_file()]
    assert len(written) > 5
    leaks = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_prints_one_line_and_marks_the_stage_interrupted(tiny_params, tmp_path, how):
    import psutil

    run = tmp_path / "results" / "tiny"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "embedtune.cli", "run", str(tiny_params), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,  # its own process group, as a terminal's job
                            # a test runner started in the background (`pytest ... &` from a script)
                            # ignores SIGINT, and a child inherits that; a terminal's job does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(run.glob(".*.running.ipynb")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # inside the first notebook
    children = psutil.Process(proc.pid).children(recursive=True)  # the stage's kernel
    assert children
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group, kernel included
    else:
        os.kill(proc.pid, signal.SIGTERM)  # `kill PID`, a scheduler or a container stopping: embedtune only
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if how == "ctrl-c" else 143), err
    word = "interrupted" if how == "ctrl-c" else "terminated"
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"embedtune: {word}")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["decide"]["status"] == "interrupted"
    assert not (run / ".stages" / "decide.json").exists() and not (run / "decision.json").exists()
    assert not list(run.glob(".*.running.ipynb")) and not (run / ".lock.holder.json").exists()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []  # no kernel left behind
