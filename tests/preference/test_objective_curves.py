"""The run report and `lmtune compare` show each objective's own numbers beside the loss: grpo's
rewards (mean, spread, per function) and KL, dpo's margins; read from the files a run leaves."""

from __future__ import annotations

import json

from lmtune.config import from_dict
from lmtune.report.build import write_report
from lmtune.report.compare import compare, to_html, to_text


def fake_run(path, objective, rows):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(from_dict({"data": {"task": "sql"}, "method": "lora",
                                                 "train": {"objective": objective}}).to_yaml())
    (path / "train_summary.json").write_text(json.dumps({"method": "lora", "objective": objective,
                                                         "global_step": len(rows)}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def grpo_rows(n=6):
    return [{"step": s, "loss": 0.01 * s, "reward": 0.2 * s, "reward_std": 0.3, "rewards/task/mean": 0.1 * s,
             "rewards/format/mean": 0.1 * s, "kl": 0.001 * s} for s in range(1, n + 1)]


def dpo_rows(n=6):
    return [{"step": s, "loss": 0.7 - 0.05 * s, "rewards/margins": 0.1 * s, "rewards/accuracies": 0.5 + 0.05 * s,
             "rewards/chosen": 0.05 * s, "rewards/rejected": -0.05 * s} for s in range(1, n + 1)]


def test_report_of_a_grpo_run_shows_rewards_per_function_and_kl(tmp_path):
    run = fake_run(tmp_path / "g", "grpo", grpo_rows())
    html = write_report(run).read_text()
    assert "Objective: grpo, rewards of sampled answers" in html
    assert "step 6: reward 1.2 +- 0.3 (task 0.6, format 0.6), KL 0.006" in html
    assert "chosen vs rejected" not in html   # the preference section is for dpo/orpo/kto


def test_report_of_a_grpo_run_shows_groups_without_spread_and_the_runs_warning(tmp_path):
    rows = [dict(r, frac_reward_zero_std=0.5 + 0.05 * r["step"]) for r in grpo_rows()]
    run = fake_run(tmp_path / "g", "grpo", rows)
    warning = "GRPO steps 1-1: the sampled answers earned almost no task reward (mean 0.000) <&>"
    summary = json.loads((run / "train_summary.json").read_text())
    (run / "train_summary.json").write_text(json.dumps(dict(summary, warnings=[warning])))
    html = write_report(run).read_text()
    assert "(task 0.6, format 0.6), 80.0% of groups without spread, KL 0.006" in html
    assert "<li>warning: GRPO steps 1-1: the sampled answers earned almost no task reward (mean 0.000) &lt;&amp;&gt;</li>" in html
    plain = write_report(fake_run(tmp_path / "p", "grpo", grpo_rows())).read_text()
    assert "without spread" not in plain and "warning: GRPO" not in plain


def test_compare_names_the_objective_and_draws_its_own_curves(tmp_path):
    runs = [fake_run(tmp_path / "g", "grpo", grpo_rows()), fake_run(tmp_path / "d", "dpo", dpo_rows()),
            fake_run(tmp_path / "s", "sft", [{"step": 1, "loss": 1.0}])]
    rows, notes = compare(runs)
    text = to_text(rows, notes)
    assert "lora, grpo" in text and "lora, dpo" in text
    assert "g: grpo, step 6: reward 1.2" in text
    assert "d: dpo, step 6: margin 0.6, chosen ranked above rejected in 80.0% of pairs" in text
    assert "s: sft" not in text    # sft has no numbers of its own
    html = to_html(rows, notes)
    assert 'alt="loss and the objectives' in html
    sft_only, sft_notes = compare([runs[2]])
    assert "data:image/png" not in to_html(sft_only, sft_notes)
