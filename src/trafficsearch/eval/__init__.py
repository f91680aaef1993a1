"""Evaluation: the official mAP@10 and honest companions (metrics), submission files (submission),
and the HTML report with thumbnails (report, imported on its own since it needs Pillow)."""

from trafficsearch.eval.metrics import RULES, EvalResult, Scores, evaluate, random_ranking
from trafficsearch.eval.submission import load_ranking, read_infer, read_submission, write_submission

__all__ = [
    "RULES", "EvalResult", "Scores", "evaluate", "random_ranking",
    "load_ranking", "read_infer", "read_submission", "write_submission",
]
