"""What a run prints: one line per round, and the summary at its end (also read back by
scripts/run_simulation.py from summary.json)."""

from __future__ import annotations


def summary_lines(summary: dict) -> list[str]:
    f = summary["final"]
    lines = ["", f"Run finished after {summary['rounds']} round(s)."]
    if summary.get("stopped_early"):
        lines.append(f"  Stopped early: {summary['stopped_early']}")
    if summary.get("privacy"):
        lines.append(f"  Privacy: {privacy_line(summary['privacy'])}")
    if f:
        lines += [
            f"  Federated evaluation on the devices' held-out text: loss {f['eval_loss']:.3f}, "
            f"perplexity {f['eval_perplexity']:.1f}, top-1 {f['eval_top1']:.1%}, top-3 {f['eval_top3']:.1%}"
            + savings(f, "eval_keystroke_savings"),
            *personal_lines(f),
            *baseline_lines(f),
            f"  Best round: top-3 {summary['best_eval_top3']:.1%} (round {summary['best_eval_top3_round']}), "
            f"lowest loss {summary['best_eval_loss']:.3f}",
        ]
    cost = summary.get("device_cost")
    if cost:
        lines.append(f"  Device cost: {cost_line(cost)}")
    if "server_top3" in f:
        lines.append(
            f"  Server evaluation on unseen synthetic users: top-3 {f['server_top3']:.1%}, "
            f"perplexity {f['server_perplexity']:.1f}"
        )
    lines += [
        f"  Model:   {summary['model']} (vocabulary: {summary['vocab']})",
        f"  On-device (LiteRT): {litert_line(summary.get('litert_check', {}))}",
        f"  Metrics: {summary['metrics']} (and .csv), plot: {summary['plot']}",
    ]
    return lines


def litert_line(check: dict) -> str:
    """Each exported file with its top-3 agreement with the Keras model, or why it is not fit to ship."""
    parts = []
    for variant, r in check.items():
        if "error" in r:
            parts.append(f"{variant} FAILED ({r['error'][:120]})")
        else:
            verdict = "" if r["fit_to_ship"] else f", NOT FIT TO SHIP (bar {r['bar']:.0%})"
            parts.append(f"{variant} {r['file']} (top-3 agreement {r['top3_agreement']:.1%}{verdict})")
    return "; ".join(parts) or "not exported"


def cost_line(cost: dict) -> str:
    line = (f"a device asked to take part moved {cost['mb_per_device']:.1f} MB on average "
            f"({cost['devices_asked']} devices asked; one message {cost['mb_down_per_message']:.2f} MB down, one "
            f"reply {cost['mb_up_per_reply']:.2f} MB up)")
    if "joules_per_reply" in cost:
        kind = "measured (RAPL)" if cost["energy_measured"] else "estimated from CPU time"
        line += (f"; a device that worked spent {cost['joules_per_participant']:.1f} J "
                 f"({cost['joules_per_reply']:.2f} J per reply, {kind}), peak memory {cost['peak_memory_mb']:,.0f} MB")
    else:
        line += "; energy not reported (participation's cost metering is off, or DP keeps it on the device)"
    return line


def savings(row: dict, key: str) -> str:
    """Keystroke savings (task/keystrokes.py), where the run measured it."""
    return f", keystroke savings {row[key]:.1%}" if key in row else ""


def round_line(row: dict) -> str:
    parts = [f"round {row['round']}:"]
    if row["train_sampled"]:
        others = [f"{row[key]} {label}" for key, label in (("train_not_eligible", "not eligible"),
                                                            ("train_busy", "still busy"), ("train_late", "late"),
                                                            ("train_failed", "failed"))
                  if row.get(key) or key == "train_failed"]
        parts.append(f"train {row['train_replied']}/{row['train_sampled']} devices ({', '.join(others)})"
                     + (f" loss {row['train_loss']:.3f}" if "train_loss" in row else ""))
    if row["eval_sampled"]:
        parts.append(f"| {eval_part(row)}")
    if "server_top3" in row:
        parts.append(f"| server loss {row['server_loss']:.3f} top-3 {row['server_top3']:.1%}")
    if "server_new_word_top3_unseen_users" in row:  # the new-word scenario (docs/vocabulary-discovery.md)
        parts.append(f"| new word in top-3: late adopters {row['server_new_word_top3_late_adopters']:.1%}, "
                     f"unseen users {row['server_new_word_top3_unseen_users']:.1%}")
    privacy = {k[3:]: v for k, v in row.items() if k.startswith("dp_")}
    if privacy:
        parts.append(f"| {privacy_line(privacy)}")
    return " ".join(parts)


def baseline_lines(f: dict) -> list[str]:
    """The devices' own n-gram baselines (not under DP: they are counted on the training text)."""
    if "eval_baseline_bigram_top3" not in f:
        return []
    return [f"  Baselines on the same text (each device counting its own training text): "
            f"bigram top-3 {f['eval_baseline_bigram_top3']:.1%}{savings(f, 'eval_baseline_bigram_keystroke_savings')}, "
            f"most-frequent-words top-3 {f['eval_baseline_unigram_top3']:.1%}"
            f"{savings(f, 'eval_baseline_unigram_keystroke_savings')}"]


def personal_lines(f: dict) -> list[str]:
    """Shared against personalised (task/personal.py) against the device's own bigram."""
    if "eval_personal_top3" not in f:
        return []
    return [f"  Personalised on each device (the model alone or mixed with the user's own counts, as each device "
            f"chose; {f['eval_personal_on']:.0%} mix): top-1 {f['eval_personal_top1']:.1%}, top-3 "
            f"{f['eval_personal_top3']:.1%}{savings(f, 'eval_personal_keystroke_savings')}; against the shared "
            f"model it lowered the top-3 of {f['eval_personal_hurt']:.0%} of the devices and raised it for "
            f"{f['eval_personal_helped']:.0%} (each by more than one prediction)",
            f"  Top-3 over every word typed (those the vocabulary lacks too): shared {f['eval_all_top3']:.1%}, "
            f"personalised {f['eval_personal_all_top3']:.1%}"]


def eval_part(row: dict) -> str:
    part = f"eval {row['eval_replied']}/{row['eval_sampled']} devices"
    if "eval_loss" in row:
        part += (f" loss {row['eval_loss']:.3f} ppl {row['eval_perplexity']:.1f} top-1 {row['eval_top1']:.1%} "
                 f"top-3 {row['eval_top3']:.1%}{savings(row, 'eval_keystroke_savings')} "
                 + (f"personalised top-3 {row['eval_personal_top3']:.1%} " if "eval_personal_top3" in row else "")
                 + (f"(bigram baseline top-3 {row['eval_baseline_bigram_top3']:.1%})"
                    if "eval_baseline_bigram_top3" in row else ""))
    return part


def privacy_line(p: dict) -> str:
    """The epsilons spent so far, each with what it protects and under which neighbouring relation
    (task/privacy/ledger.py ZERO_OUT: one device's update replaced by zero, its votes empty; whether it replied is
    not protected)."""
    zero_out = ("zero-out: one device's update replaced by zero (its votes empty); whether it replied is not protected "
                "(the number of devices and their reply status are public)")
    central = (f"user-level ε (DP-FTRL; {zero_out}; no sampling credit)" if p.get("dp_mode") == "central-ftrl" else
               f"user-level ε (BLT-DP-FTRL; {zero_out}; no sampling credit)" if p.get("dp_mode") == "central-blt" else
               f"user-level ε (central; {zero_out}; no sampling credit)")
    sample = "sample-level ε (DP-SGD, one window of what a device sends in training, worst device"
    names = {
        "epsilon_central": central,
        "epsilon_central_amplified": "user-level ε with the server's sampling credited (replace one device)",
        "epsilon_local": "user-level ε (local DP, worst device, against the server too)",
        "epsilon_sample": sample + ("; discovery not in it)" if "epsilon_discovery" in p else ")"),
        "epsilon_discovery": "user-level ε of new-word discovery (TrieHH, add/remove one device)",
        "epsilon_with_discovery": f"user-level ε, model and discovery together ({zero_out})",
    }
    parts = [f"{label} = {p[key]:.3f}" for key, label in names.items() if key in p]
    mode = p.get("dp_mode", "none") + (" + DP-SGD" if p.get("dp_sgd") else "")
    deltas = "".join(f", {what} δ = {p[key]:.2g}" for key, what in (("delta_discovery", "discovery's"),
                                                                    ("delta_with_discovery", "the total's"))
                     if key in p)
    return f"{mode}: " + ", ".join(parts) + f" at δ = {p['delta']:g}{deltas}"
