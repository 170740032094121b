"""Independent scorers to check embedtune's numbers against: BEIR's and MTEB's evaluation.

- :func:`beir_ndcg` scores one of our runs with ``beir.retrieval.evaluation.EvaluateRetrieval``
  (pytrec_eval). BEIR drops a retrieved document whose id equals the query id unless told not
  to; we pass ``ignore_identical_ids=False`` so both score the same ranking, and report how
  many such hits exist.
- :func:`mteb_ndcg` lets MTEB encode and search on its own (a custom local retrieval task),
  so it checks our encoding, search and metrics together.

Example:
    >>> beir_ndcg(qrels, run)["NDCG@10"]
"""

from __future__ import annotations

import logging
import os
from typing import Any

from embedtune.data import Qrels
from embedtune.retrieval import Run


def identical_id_hits(run: Run) -> int:
    """Retrieved documents whose id equals the query id (BEIR would silently drop them)."""
    return sum(1 for q, docs in run.items() if q in docs)


def beir_ndcg(qrels: Qrels, run: Run, k_values=(1, 10, 100)) -> dict[str, float]:
    """nDCG/recall/MAP from BEIR's evaluator on our run (identical ids kept, as ranx does)."""
    from beir.retrieval.evaluation import EvaluateRetrieval

    ndcg, _map, recall, _precision = EvaluateRetrieval.evaluate(
        qrels, run, list(k_values), ignore_identical_ids=False)
    return {**ndcg, **_map, **recall}


def mteb_ndcg(model, corpus: dict[str, dict[str, str]], queries: dict[str, str], qrels: Qrels,
              batch_size: int = 64) -> dict[str, Any]:
    """Evaluate ``model`` with MTEB's own retrieval pipeline on local data, offline.

    Returns:
        MTEB's scores for the split (``ndcg_at_10``, ``recall_at_10``, ...).
    """
    os.environ.setdefault("MTEB_CACHE", os.path.join(os.environ.get("EMBEDTUNE_CACHE_DIR", "cache"), "mteb"))
    import datasets
    import mteb
    from mteb import TaskMetadata
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    logging.getLogger("mteb").setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    corpus_ds = datasets.Dataset.from_list(
        [{"id": d, "title": doc.get("title", ""), "text": doc["text"]} for d, doc in corpus.items()])
    queries_ds = datasets.Dataset.from_list([{"id": q, "text": queries[q]} for q in qrels])

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="EmbedtuneLocal",
            description="a local BEIR-format folder",
            dataset={"path": "local", "revision": "local"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
        )

        def load_data(self, num_proc=None, **kwargs):
            self.dataset = {"default": {"test": {"corpus": corpus_ds, "queries": queries_ds,
                                                 "relevant_docs": qrels, "top_ranked": None}}}
            self.data_loaded = True

    result = mteb.evaluate(model, LocalRetrieval(), cache=None, show_progress_bar=False,
                           encode_kwargs={"batch_size": batch_size, "show_progress_bar": False})
    return result.task_results[0].scores["test"][0]
