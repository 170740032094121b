from embedtune.config import ExperimentConfig, DataConfig, OODConfig
from embedtune.context import RunContext
from embedtune.stages.evaluate import out_of_domain


def test_ood_block_scores_both_models_on_the_other_dataset(tiny_beir, tmp_path):
    from embedtune.models import load_model

    cfg = ExperimentConfig(experiment="x", data=DataConfig(dataset=str(tiny_beir)),
                           ood=OODConfig(datasets=(str(tiny_beir),), max_queries=1))
    model = load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    out = out_of_domain(RunContext(cfg, tmp_path), model, model)
    block = out[str(tiny_beir)]
    assert block["n_queries"] == 1  # capped by max_queries
    assert block["generic"] == block["finetuned"]  # the same model twice scores the same
    assert block["significance"]["finetuned_vs_generic"]["ndcg@10"]["p_value"] == 1.0
