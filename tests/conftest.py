import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("EMBEDTUNE_NO_PROGRESS", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # one embedding cache per test session, never the project's own; session-scoped so that
    # module-scoped fixtures (and the kernels papermill starts) see it too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDTUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("EMBEDTUNE_REGISTRY", str(tmp_path_factory.getbasetemp() / "registry"))
        yield


def write_beir(folder: Path, corpus, queries, qrels: dict[str, list[tuple]]) -> Path:
    """Write a BEIR folder from literals: corpus/queries as dicts id -> text (or (title, text))."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for did, value in corpus.items():
            title, text = value if isinstance(value, tuple) else ("", value)
            fh.write(json.dumps({"_id": did, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def tiny_beir(tmp_path):
    corpus = {
        "d1": ("Cats", "Cats are small domesticated felines that purr."),
        "d2": ("Dogs", "Dogs are loyal animals that bark."),
        "d3": ("Rockets", "Rocket engines burn propellant to produce thrust."),
        "d4": ("Jet engines", "A jet engine produces thrust by expelling hot gas."),
        "d5": ("Bread", "Bread is baked from flour, water and yeast."),
    }
    queries = {"q1": "why do cats purr", "q2": "how does an engine make thrust",
               "q3": "what is bread made of", "q4": "barking dogs"}
    qrels = {"test": [("q1", "d1", 1), ("q2", "d3", 1), ("q2", "d4", 2)],
             "train": [("q3", "d5", 1), ("q4", "d2", 1)]}
    return write_beir(tmp_path / "tiny", corpus, queries, qrels)


def shared_datasets() -> Path | None:
    env = os.environ.get("EMBEDTUNE_DATA_DIR")
    if env and (Path(env) / "scifact" / "corpus.jsonl").is_file():
        return Path(env)
    if (ROOT / "data" / "scifact" / "corpus.jsonl").is_file():
        return ROOT / "data"
    return None


@pytest.fixture
def scifact_available():
    if shared_datasets() is None:
        pytest.skip("scifact not found: set EMBEDTUNE_DATA_DIR to a folder holding BEIR scifact "
                    "(CI points it at ../shared/datasets)")
