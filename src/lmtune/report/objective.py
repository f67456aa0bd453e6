"""The objective's own numbers beside the loss: GRPO's rewards (mean and spread of each sampled
group, per reward function) and KL to the start, as TRL logs them; one line per run for `lmtune
compare` (dpo/orpo/kto: the chosen-vs-rejected margin, grpo: reward and KL), and its curves there."""

from __future__ import annotations

import base64
import io

from lmtune.report import html as H

# the series that tells, for each objective, whether the objective itself is moving
OWN_SERIES = {"grpo": ("reward", "reward (mean of sampled answers)"),
              "dpo": ("rewards/margins", "margin (chosen - rejected)"),
              "orpo": ("rewards/margins", "margin (chosen - rejected)"),
              "kto": ("rewards/margins", "margin (chosen - rejected)")}


def series(metrics: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in metrics if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def reward_names(metrics: list[dict]) -> list[str]:
    """The reward functions of a grpo run, in the order TRL logged them (rewards/NAME/mean)."""
    names: dict[str, None] = {}
    for row in metrics:
        for key in row:
            if key.startswith("rewards/") and key.endswith("/mean"):
                names[key[len("rewards/"):-len("/mean")]] = None
    return list(names)


def plot_grpo(metrics: list[dict]) -> str | None:
    """Reward mean with its spread inside the groups (TRL's reward_std) and each reward function's
    mean; the KL to the start (logged when rl.beta > 0)."""
    from matplotlib.figure import Figure

    x, mean = series(metrics, "reward")
    if not x:
        return None
    _, std = series(metrics, "reward_std")
    fig = Figure(figsize=(10, 3.6))
    ax_r, ax_kl = fig.subplots(1, 2)
    ax_r.plot(x, mean, label="reward (sum)", color="#3867d6")
    if len(std) == len(mean):
        ax_r.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                          color="#3867d6", alpha=.15, label="+- std within groups")
    for name in reward_names(metrics):
        rx, ry = series(metrics, f"rewards/{name}/mean")
        ax_r.plot(rx, ry, "--", label=name)
    ax_r.set(xlabel="step", ylabel="reward", title="Rewards of sampled answers")
    ax_r.grid(alpha=.3)
    ax_r.legend(fontsize=8)
    kx, ky = series(metrics, "kl")
    if kx:
        ax_kl.plot(kx, ky, color="#8854d0")
    ax_kl.set(xlabel="step", ylabel="KL", title="KL to the start (rl.beta > 0)")
    ax_kl.grid(alpha=.3)
    return _png(fig)


def section_grpo(metrics: list[dict], warnings: list[str] | None = None) -> str:
    """The curves, the last step in words, and what the run warned of while training
    (train_summary.json's warnings: GRPO's groups without spread, lmtune/train/callbacks.py)."""
    png = plot_grpo(metrics)
    if png is None:
        return ""
    note = summary(metrics, "grpo")
    listed = "".join(f"<li>warning: {H.esc(w)}</li>" for w in warnings or [])
    return ("<h2>Objective: grpo, rewards of sampled answers</h2>" + (f"<ul>{listed}</ul>" if listed else "")
            + H.img(png, "grpo rewards")
            + (f'<p class="muted">last logged step: {H.esc(note)}.</p>' if note else ""))


def summary(metrics: list[dict], objective: str) -> str | None:
    """The objective's last logged numbers in words, or None (sft, or nothing logged)."""
    if objective == "grpo":
        last = [r for r in metrics if "reward" in r]
        if not last:
            return None
        r = last[-1]
        text = f"step {r.get('step')}: reward {H.fmt_num(r['reward'])} +- {H.fmt_num(r.get('reward_std'))}"
        parts = [f"{n} {H.fmt_num(r[f'rewards/{n}/mean'])}" for n in reward_names([r])]
        if parts:
            text += f" ({', '.join(parts)})"
        if "frac_reward_zero_std" in r:   # groups whose answers all scored the same teach nothing
            text += f", {H.fmt_pct(r['frac_reward_zero_std'])} of groups without spread"
        return text + (f", KL {H.fmt_num(r['kl'])}" if "kl" in r else "")
    last = [r for r in metrics if "rewards/margins" in r]
    if objective == "sft" or not last:
        return None
    r = last[-1]
    return (f"step {r.get('step')}: margin {H.fmt_num(r['rewards/margins'])}, chosen ranked above rejected in "
            f"{H.fmt_pct(r.get('rewards/accuracies'))} of pairs")


def plot_compare(runs: list[tuple[str, str, list[dict]]]) -> str | None:
    """Runs side by side: train loss, and each run's own objective series; (name, objective, metrics)."""
    from matplotlib.figure import Figure

    own = [(n, o, m) for n, o, m in runs if o in OWN_SERIES and series(m, OWN_SERIES[o][0])[0]]
    if not own:
        return None
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_own = fig.subplots(1, 2)
    for name, _, metrics in runs:
        x, y = series(metrics, "loss")
        if x:
            ax_loss.plot(x, y, label=name)
    ax_loss.set(xlabel="step", ylabel="loss", title="Train loss")
    ax_loss.grid(alpha=.3)
    ax_loss.legend(fontsize=8)
    for name, objective, metrics in own:
        key, label = OWN_SERIES[objective]
        x, y = series(metrics, key)
        ax_own.plot(x, y, label=f"{name}: {label}")
    ax_own.set(xlabel="step", title="The objective's own numbers")
    ax_own.grid(alpha=.3)
    ax_own.legend(fontsize=8)
    return _png(fig)
