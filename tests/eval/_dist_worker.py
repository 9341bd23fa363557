"""One rank of the distributed-evaluation test (started like torchrun: RANK/WORLD_SIZE/MASTER_* in the env).

    python _dist_worker.py MODEL_DIR CLS_DIR RET_DIR OUT_FILE
"""
import os
import sys

import torch


def evaluate_all(model_dir: str, cls_dir: str, ret_dir: str) -> dict:
    import kizuna
    from kizuna.eval.classification import evaluate_classifier, evaluate_zeroshot
    from kizuna.eval.datasets import load_dataset
    from kizuna.eval.linear_probe import evaluate_linear_probe
    from kizuna.eval.probes import evaluate_robustness, relation_swap_probe
    from kizuna.eval.retrieval import evaluate_retrieval
    from kizuna.eval.training import evaluate_for_training

    model = kizuna.create_model(model_dir).eval()
    tok = kizuna.get_tokenizer(model)
    test = load_dataset(cls_dir, split="test")
    zs = evaluate_zeroshot(model, tok, test, batch_size=3, text_batch_size=4, progress=False, keep_scores=True)
    ret = evaluate_retrieval(model, tok, load_dataset(ret_dir), batch_size=3, text_batch_size=5, progress=False)
    lp = evaluate_linear_probe(model, load_dataset(cls_dir, split="train"), test, few_shot=(1,), seeds=1,
                               batch_size=4, progress=False)
    rob = evaluate_robustness(model, tok, test, corruptions=["gaussian_noise"], severities=(3,), batch_size=3,
                              progress=False)
    rel = relation_swap_probe(model, tok, n_groups=5, batch_size=3)
    train_metrics = evaluate_for_training(model, tok, kizuna.get_preprocess(model), cls_dir, ret_dir, batch_size=3)
    torch.manual_seed(0)  # the same random classifier in every process
    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=len(test.classnames), width=32, depth=1, heads=2,
                            mlp_dim=64).eval()
    torch.nn.init.normal_(vit.head.weight)  # the head starts at zero, which would make every prediction class 0
    cl = evaluate_classifier(vit, test, batch_size=3, progress=False, keep_scores=True)
    return {"cl_metrics": cl.metrics, "cl_scores": cl.scores, "cl_skipped": cl.skipped.as_dict(),
            "zs_metrics": zs.metrics, "zs_pred": zs.predictions, "zs_scores": zs.scores,
            "zs_skipped": zs.skipped.as_dict(), "ret_metrics": ret.metrics, "i2t": ret.image_to_text_ranks,
            "t2i": ret.text_to_image_ranks, "lp": lp.metrics, "rob": rob.metrics, "rel": rel, "train": train_metrics}


if __name__ == "__main__":
    torch.set_num_threads(1)
    from kizuna.train.distributed import init_distributed

    info = init_distributed("cpu")
    assert info.world_size > 1
    res = evaluate_all(*sys.argv[1:4])
    torch.save(res, sys.argv[4].format(rank=info.rank))  # "rank{rank}.pt": both ranks are given one argv
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter finalisation, where gloo's threads can abort the process (see the loss worker)
