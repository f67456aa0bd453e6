"""lmtune's SFTTrainer: TRL's, with one optional change to how the loss runs the LM head.

TRL's SFTTrainer scores answers through a chunked "fused" LM head that never holds the full
(positions x vocabulary) logits, and computes entropy and top-1 accuracy on every step for its
logs. That saves memory on GPUs with large vocabularies; on a CPU its tiled kernel and the extra
statistics cost time. `label_logits` instead asks the model's own forward for logits only where a
label is set (`logits_to_keep`, an index list) and takes the cross-entropy of those: the same loss
value and gradients (a test compares both with TRL's), faster on CPU (measured in
benchmarks/README.md). Entropy is not logged on this path; mean_token_accuracy is.

Two attributes of TRL's SFTTrainer that are not public API are used, on purpose:
`_metrics` (TRL's `log` averages, logs and clears this dict; it has no public hook for per-step
metrics, and writing there keeps the logged keys identical on both paths) and `_total_train_tokens`
(TRL's running token count logged as num_tokens; sharing it keeps one count when a run mixes both
paths). tests/train/test_cpu_fast_paths.py checks both are still logged, so a TRL rename fails there.
"""

from __future__ import annotations

from trl import SFTTrainer


class LmtuneSFTTrainer(SFTTrainer):
    def __init__(self, *args, lm_head: str = "fused", **kwargs):
        super().__init__(*args, **kwargs)
        self.lm_head = lm_head
        # transformers' own check of the forward signature (older remote code may lack the
        # argument: TRL's path runs then); the model is not wrapped for DDP yet here
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._takes_logits_to_keep = getattr(base, "_supports_logits_to_keep", lambda: False)()

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs,
                             resume_from_checkpoint, trial):
        """transformers checks max_steps only after an optimizer step: resumed from a checkpoint
        saved at max_steps in the middle of an epoch (a run killed after its last checkpoint, before
        the final save), it would train one step more. Nothing is left then: zero epochs to run."""
        epochs_trained, steps_skipped = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        if resume_from_checkpoint is not None and self.state.global_step >= max_steps:
            return num_train_epochs, 0
        return epochs_trained, steps_skipped

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._label_logits_apply(inputs, return_outputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return self._label_logits_loss(model, inputs, num_items_in_batch)

    def _label_logits_apply(self, inputs, return_outputs: bool) -> bool:
        # anything TRL handles specially (MoE aux loss, label smoothing, a custom loss, callers
        # that want full logits, the DFT loss, context/sequence parallelism with pre-shifted
        # labels) keeps TRL's path
        parallel = getattr(self.accelerator, "parallelism_config", None)
        return (self.lm_head == "label_logits" and not return_outputs and "labels" in inputs
                and "shift_labels" not in inputs and self.args.loss_type == "nll"
                and not (parallel is not None and getattr(parallel, "sp_enabled", False))
                and not self.aux_loss_enabled and self.label_smoother is None
                and self.compute_loss_func is None and self._takes_logits_to_keep)

    def _label_logits_loss(self, model, inputs, num_items_in_batch):
        import torch
        import torch.nn.functional as F

        labels = inputs["labels"]
        # position t predicts token t+1; columns where no row has a label are never projected
        shifted = F.pad(labels[:, 1:], (0, 1), value=-100)
        keep = (shifted != -100).any(dim=0).nonzero().flatten()
        forward = {**{k: v for k, v in inputs.items() if k != "labels"}, "use_cache": False}
        outputs = model(**forward, logits_to_keep=keep)
        target = shifted[:, keep]
        logits = outputs.logits.float()
        mask = target != -100
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum")
        loss = nll / torch.as_tensor(count, device=nll.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # as TRL and Trainer do: num_items_in_batch counts every rank's tokens, DDP averages
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._log_token_metrics(inputs, logits, target, mask)
        return loss

    def _log_token_metrics(self, inputs, logits, target, mask) -> None:
        """mean_token_accuracy and num_tokens, as TRL logs them."""
        import torch

        mode = "train" if self.model.training else "eval"
        with torch.no_grad():
            valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
            correct = self.accelerator.gather_for_metrics(((logits.argmax(-1) == target) & mask).sum()).sum()
        self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            # padded batches count their mask; padding-free packed rows count every position
            attention = inputs.get("attention_mask")
            ids = inputs["input_ids"]
            local = attention.sum() if attention is not None else torch.tensor(ids.numel(), device=ids.device)
            self._total_train_tokens += self.accelerator.gather_for_metrics(local).sum().item() // self._tp_ranks()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def _tp_ranks(self) -> int:
        """Tensor-parallel ranks see the same batch, so a gathered count repeats each token once
        per rank (as TRL divides); context/sequence parallelism shard the batch and need nothing."""
        parallel = self.accelerator.parallelism_config
        return parallel.tp_size if parallel is not None else 1
