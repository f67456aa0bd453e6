#!/usr/bin/env bash
# Mutation testing of lmtune's critical modules with mutmut (pinned in the dev extras): every
# module is mutated on its own and checked only against its fast, targeted tests (the table below).
# Not run in CI: a small module takes minutes, train/data/estimate much longer.
#
#   scripts/mutation.sh                      # every module in the table
#   scripts/mutation.sh tasks/sql methods/lora
#   MUTATION_JOBS=2 scripts/mutation.sh estimate/activations
#   MUTATION_ONLY='*x_generic_profile__mutmut_*' scripts/mutation.sh estimate/activations  # one function
#   MUTATION_ONLY='*x__assemble__mutmut_* *x__row__mutmut_*' scripts/mutation.sh evaluate/run  # several
#   MUTATION_TESTS=tests/estimate/test_estimate_formulas.py scripts/mutation.sh estimate/activations  # fast tests only
# After adding tests, recheck only the survivors: scripts/mutation_rerun.sh .mutation/<module>
#
# Each module runs in its own copy of the tree under $MUTATION_WORK/<module> (default .mutation/,
# git-ignored), so runs never touch src/ and can go in parallel. Afterwards, in that directory:
#   mutmut results            # survivors and the rest
#   mutmut show NAME          # the diff of one mutant
# The score printed is killed / (all mutants that ran); timeouts are counted apart, never as kills.
set -euo pipefail

source "$(dirname "$0")/mutation_tools.sh"
WORK=${MUTATION_WORK:-$ROOT/.mutation}
JOBS=${MUTATION_JOBS:-1}   # 1 by default: the suite's tests are CPU-bound

# module -> "source files (globs relative to the repo) | test selection (pytest node ids or files)"
declare -A MODULES=(
  [tasks/sql]="src/lmtune/tasks/sql.py | tests/tasks/test_tasks_sql.py tests/tasks/test_sql_sandbox_layers.py"
  [evaluate/forgetting]="src/lmtune/evaluate/forgetting.py | tests/evaluate/test_forgetting.py tests/evaluate/test_eval.py::test_verdict_on_both_sides_of_each_threshold tests/evaluate/test_eval.py::test_verdict_follows_configured_thresholds tests/train/test_critical_settings.py::test_forgetting_thresholds_from_the_config_decide_the_verdict"
  [estimate/activations]="src/lmtune/estimate/activations.py | tests/estimate/test_estimate_formulas.py tests/estimate/test_estimate_activations.py"
  [methods/lora]="src/lmtune/train/methods/lora.py | tests/train/test_critical_settings.py::test_lora_rank_alpha_and_rslora_reach_the_peft_modules tests/train/test_critical_settings.py::test_lora_bias_dora_and_checkpointing_reach_peft tests/train/test_critical_settings.py::test_lora_targets_missing_from_the_model_are_a_config_error"
  [methods]="src/lmtune/train/methods/__init__.py src/lmtune/train/methods/full.py src/lmtune/train/methods/qlora.py src/lmtune/train/methods/qlora_check.py | tests/train/test_methods.py tests/train/test_qlora.py::test_qlora_keeps_embeddings_head_and_residual_stream_in_bf16 tests/train/test_qlora.py::test_qlora_fp16_base_still_upcasts_for_stability"
  [merge]="src/lmtune/merge.py | tests/merge/test_merge.py tests/train/test_critical_settings.py::test_merge_reports_a_tiny_difference_and_writes_the_model tests/train/test_critical_settings.py::test_merge_refuses_a_real_mismatch_and_writes_nothing"
  [rundir]="src/lmtune/run/layout.py | tests/run/test_layout.py"
  [rl/pairs]="src/lmtune/rl/pairs.py | tests/preference/test_pairs_command.py"
  [train/callbacks]="src/lmtune/train/callbacks.py src/lmtune/train/resume.py | tests/train/test_callbacks.py tests/train/test_resume.py::test_stop_at_is_max_steps_when_set_else_epochs tests/train/test_resume.py::test_a_finished_run_is_recognised_by_its_stopping_point tests/train/test_resume.py::test_a_summary_from_before_stop_at_compares_max_steps_only tests/train/test_resume.py::test_not_finished_without_the_weights_or_a_readable_summary tests/train/test_resume.py::test_resume_picks_the_last_complete_checkpoint_at_or_before_max_steps tests/train/test_resume.py::test_resume_at_max_steps_one_and_only_rank_zero_deletes tests/train/test_resume.py::test_resume_refuses_when_every_checkpoint_is_past_max_steps tests/train/test_resume.py::test_metrics_on_resume_keep_rows_up_to_the_checkpoint_and_drop_a_cut_line tests/train/test_resume_conflicts.py tests/run/test_layout.py"
  [train/core]="src/lmtune/train/recipe.py src/lmtune/train/arguments.py | tests/train/test_recipe.py tests/train/test_recipe_setup.py tests/train/test_recipe_train.py"
  [train/sft]="src/lmtune/train/trainer.py | tests/train/test_trainer.py tests/train/test_cpu_fast_paths.py::test_label_logits_loss_equals_trl_fused_loss_and_gradients"
  [train]="src/lmtune/train/recipe.py src/lmtune/train/trainer.py | tests/train/test_resume.py tests/train/test_train.py tests/train/test_reliability_runs.py tests/train/test_critical_settings.py"
  [data/split]="src/lmtune/data/holdout.py | tests/data/test_split_holdout.py tests/data/test_arrow_pipeline.py"
  [data/formats]="src/lmtune/data/formats.py src/lmtune/data/templates.py | tests/data/test_templates.py tests/data/test_formats.py tests/data/test_data_pipeline.py tests/data/test_data_errors.py tests/data/test_data_templates.py tests/data/test_split_holdout.py tests/evaluate/test_eval_few_shot.py::test_chat_template_gets_one_conversation_with_the_shots_answered tests/evaluate/test_eval_few_shot.py::test_single_turn_layout_repeats_whole_training_examples tests/evaluate/test_eval_few_shot.py::test_a_chat_in_progress_is_all_prompt"
  [data/cache]="src/lmtune/data/cache.py | tests/data/test_data_cache.py"
  [data/replay]="src/lmtune/data/replay.py | tests/data/test_data_replay.py tests/cli/test_visible_output.py"
  [data/readers]="src/lmtune/data/readers.py src/lmtune/data/parallel.py | tests/data/test_readers.py tests/data/test_data_errors.py tests/data/test_data_pipeline.py"
  [data/records]="src/lmtune/data/records.py src/lmtune/data/stream.py | tests/data/test_records_stream.py"
  [data/tokenize]="src/lmtune/data/tokenize.py src/lmtune/data/tokenize_batch.py | tests/data/test_tokenize.py tests/data/test_data_templates.py tests/data/test_data_scale.py::test_batched_masks_follow_both_per_example_rules tests/data/test_tokenize_progress.py"
  [data/arrow]="src/lmtune/data/arrow_pipeline.py src/lmtune/data/token_shards.py src/lmtune/data/prepare.py | tests/data/test_arrow_pipeline.py tests/data/test_data_pipeline.py tests/data/test_tokenize_progress.py"
  [data]="src/lmtune/data/*.py | tests/data/test_data_errors.py tests/data/test_data_packing.py tests/data/test_data_pipeline.py tests/data/test_data_templates.py"
  [evaluate]="src/lmtune/evaluate/perplexity.py src/lmtune/evaluate/metrics.py src/lmtune/evaluate/summary.py src/lmtune/evaluate/few_shot.py | tests/evaluate/test_perplexity.py tests/evaluate/test_eval_summary.py tests/evaluate/test_eval_metrics.py tests/evaluate/test_few_shot.py tests/evaluate/test_eval_few_shot.py::test_chat_template_gets_one_conversation_with_the_shots_answered tests/evaluate/test_eval_few_shot.py::test_single_turn_layout_repeats_whole_training_examples tests/evaluate/test_eval_few_shot.py::test_zero_shots_leave_the_prompts_alone tests/evaluate/test_eval.py::test_labels_follow_the_completion_mask"
  [evaluate/run]="src/lmtune/evaluate/run.py src/lmtune/evaluate/__init__.py | tests/cli/test_visible_output.py tests/evaluate/test_eval_run.py tests/train/test_critical_settings.py::test_forgetting_thresholds_from_the_config_decide_the_verdict"
  [estimate/lora]="src/lmtune/estimate/lora.py | tests/estimate/test_estimate_formulas.py tests/estimate/test_estimate_params.py"
  [estimate/memory]="src/lmtune/estimate/memory.py | tests/estimate/test_estimate_formulas.py tests/estimate/test_estimate_memory.py tests/estimate/test_estimate_activations.py"
  [estimate/core]="src/lmtune/estimate/core.py | tests/estimate/test_estimate_formulas.py tests/estimate/test_estimate_memory.py"
  [estimate/shapes]="src/lmtune/estimate/shapes.py | tests/estimate/test_estimate_shapes.py tests/estimate/test_estimate_formulas.py tests/estimate/test_estimate_params.py"
  [estimate/rest]="src/lmtune/estimate/speed.py src/lmtune/estimate/hardware.py src/lmtune/estimate/render.py | tests/estimate/test_estimate_speed.py tests/estimate/test_estimate_hardware.py tests/estimate/test_estimate_render.py tests/estimate/test_estimate_formulas.py tests/estimate/test_estimate_memory.py"
  [estimate]="src/lmtune/estimate/*.py | tests/estimate/test_estimate_formulas.py tests/estimate/test_estimate_activations.py tests/estimate/test_estimate_memory.py tests/estimate/test_estimate_params.py"
)

run_module() {
  local key=$1 spec=${MODULES[$1]} only=()
  # MUTATION_ONLY: mutant name patterns separated by spaces (mutmut's own globs, never the shell's)
  read -r -a only <<<"${MUTATION_ONLY:-}"
  local sources=${spec%%|*} tests=${spec#*|}
  # MUTATION_TESTS: a narrower test selection (e.g. only the fast unit tests, then rerun the survivors)
  tests=${MUTATION_TESTS:-$tests}
  local dir="$WORK/${key//\//_}"
  # a fresh copy of the tree; MUTATION_KEEP=1 keeps mutmut's earlier results (only what changed reruns)
  [ "${MUTATION_KEEP:-0}" = 1 ] || rm -rf "$dir"
  mkdir -p "$dir"
  rm -rf "$dir/src" "$dir/tests" "$dir/scripts" "$dir/examples" "$dir/configs"
  cp -a "$ROOT/src" "$ROOT/tests" "$ROOT/scripts" "$ROOT/examples" "$ROOT/configs" "$ROOT/pyproject.toml" "$dir/"
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  {
    echo "[mutmut]"
    echo "source_paths = src"
    echo "only_mutate ="
    for s in $sources; do echo "    $s"; done
    echo "also_copy ="   # tests read example data files and configs by path
    echo "    examples"
    echo "    configs"
    echo "pytest_add_cli_args_test_selection ="
    for t in $tests; do echo "    $t"; done
    echo "pytest_add_cli_args ="
    echo "    -p"
    echo "    no:cacheprovider"
    echo "    -q"
    # torch is not fork-safe once its thread pools exist: fork each mutant from a clean server
    echo "process_isolation = forkserver"
    echo "timeout_multiplier = 30.0"
  } > "$dir/setup.cfg"
  echo "== $key: mutating $sources"
  echo "   tests: $tests"
  (cd "$dir" && env -u PYTHONPATH HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
     "$MUTMUT" run --max-children "$JOBS" "${only[@]}" >"$dir/run.log" 2>&1) || echo "   mutmut exited $? (see $dir/run.log)"
  (cd "$dir" && env -u PYTHONPATH "$MUTMUT" results --all true >"$dir/results.txt" 2>&1) || true
  "$PYTHON" - "$key" "$dir/results.txt" <<'EOF'
import collections, sys
key, path = sys.argv[1], sys.argv[2]
counts = collections.Counter()
for line in open(path, encoding="utf-8"):
    name, sep, status = line.strip().rpartition(": ")
    if sep and "__mutmut_" in name:
        counts[status.strip()] += 1
ran = sum(v for k, v in counts.items() if k not in ("not checked", "skipped"))
killed = counts["killed"]
score = 100.0 * killed / ran if ran else 0.0
detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
print(f"   {key}: {killed}/{ran} killed = {score:.1f}%  ({detail})")
EOF
}

keys=("$@")
[ ${#keys[@]} -eq 0 ] && keys=("${!MODULES[@]}")
for key in "${keys[@]}"; do
  if [ -z "${MODULES[$key]+x}" ]; then
    echo "unknown module $key; known: ${!MODULES[*]}" >&2
    exit 2
  fi
  run_module "$key"
done
