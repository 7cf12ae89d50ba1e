"""After a run: the fine-tuned model against its base on held-out rows (evaluation.py), the
report that holds the scores and answers (report.py), and what to change when a run did not
learn (advice.py)."""
