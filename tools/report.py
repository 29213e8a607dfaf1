"""The tables of README.md and docs/*.md, generated from the files under results/.

    python tools/report.py            # rewrite every generated block from results/
    python tools/report.py --check    # change nothing; exit 1 and name each block that differs

A generated block is everything between a line `<!-- results: NAME -->` and the next `<!-- /results -->`.
NAME picks one of the RENDERERS below, which reads results/NAME.json (written, with its provenance, by
the command that measured it) and returns the block's Markdown: the table, the sentences that quote
its numbers, and a line saying where they come from. Edit the results file's command, not the block.
"""
import argparse
import functools
import glob
import json
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from methods import METHODS  # noqa: E402  (the display names of the methods)

BLOCK = re.compile(r"(<!-- results: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


class ReportError(ValueError):
    """A block that names no renderer or a results file that is missing or malformed."""


def load(root: str, name: str) -> dict:
    path = os.path.join(root, "results", f"{name}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"results/{name}.json: {e}") from e


def source_line(name: str, result: dict, depth: int) -> str:
    """Where a block's numbers come from: the file, the command that wrote it, the commit, data, machine."""
    p = result["provenance"]
    m = p["machine"]
    data = ", ".join(f"{d['name']} (sha256 {d['sha256'][:12]})" for d in p["data"]) or "no data files"
    link = "../" * depth + f"results/{name}.json"
    return (f"*From [`results/{name}.json`]({link}), written by `{p['command']}` on {p['date']}; commit "
            f"{p['commit'][:12]}{'-dirty' if p['commit'].endswith('-dirty') else ''}; data: {data}; "
            f"{m['system']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, {m['device']}.*")


# ---------------------------------------------------------------------------------------------------
# Renderers: results file -> Markdown


def shown(method: str) -> str:
    """A method's display name (SAT, WEAT-adv, ...) from its key."""
    return METHODS[method].display if method in METHODS else method


def by_method(runs: list) -> dict:
    """The runs of a claims results file grouped by method, in their order."""
    groups = {}
    for run in runs:
        groups.setdefault(run["method"], []).append(run)
    return groups


def speed_cpu(r: dict) -> str:
    s, p, a, goals = r["step"], r["pipeline"], r["apgd"], r["goals"]
    return "\n".join([
        "| measure | figure | goal |",
        "|---|---|---|",
        f"| 1. TRADES step / its floor | {s['ratio']:.3f} ({1e3 * s['step_s']:.0f} ms vs {1e3 * s['floor_s']:.0f} ms) "
        f"| at most {goals['step']:.2f} |",
        f"| 2. our pipeline / DataLoader + PIL | {p['ratio']:.1f}x ({p['ours_images_per_s']:,.0f} vs "
        f"{p['dataloader_images_per_s']:,.0f} images/s) | at least {goals['pipeline']:.0f}x |",
        f"| 3. APGD iteration / forward + input gradient | {a['ratio']:.3f} ({1e3 * a['iteration_s']:.1f} ms vs "
        f"{1e3 * a['forward_backward_s']:.1f} ms) | at most {goals['apgd']:.2f} |",
    ])


def speed_vs_official_trades(r: dict) -> str:
    rounds = r["rounds"]
    ratios = [x["ours_s"] / x["official_s"] for x in rounds]
    lines = ["| round | official TRADES machinery (s) | `train.py` (s) | ours / official |", "|---|---|---|---|"]
    lines += [f"| {x['round']} | {x['official_s']:.1f} | {x['ours_s']:.1f} | {q:.3f} |" for x, q in zip(rounds, ratios)]
    lines += ["", f"Median ratio over the {len(rounds)} rounds: **{statistics.median(ratios):.3f}** (the goal: at most "
                  f"{r['goal']:.2f}). Both sides trained {r['settings']['train_images']:,} images for one epoch "
                  f"(K = {r['settings']['steps']}, batch {r['settings']['batch_size']}, width-{r['settings']['width']} "
                  f"ResNet-18), then PGD-20 on {r['settings']['val_images']} validation images."]
    return "\n".join(lines)


def moved(shift: dict) -> str:
    """How an attack moves the mean: only an interval that excludes 0 counts."""
    return "down" if shift["hi"] < 0 else "up" if shift["lo"] > 0 else "no clear move"


def seeds_note(s: dict) -> str:
    seeds = s["attack_seeds"]
    return ("one run of each attack (seed 0)" if seeds == 1 else
            f"each random attack run with {seeds} seeds (FAB, deterministic, once): the shift is that of the point-wise "
            "mean over the seeds, and the per-seed column gives each seed's own shift")


def energy_attacks_reference(r: dict) -> str:
    s = r["settings"]
    lines = [f"First {s['n']} test points, eps {s['eps_pixels']:g}/255, K = {s['steps']} iterations, the paper's attack "
             f"points; {seeds_note(s)}; the interval is a 95% bootstrap interval over points (2,000 draws), and the "
             "shift counts as a move only where it excludes 0. Mean E(x), E(x, y), the share of points whose E(x) went "
             "down and the success rate are those of the seed-0 run (the shares: averaged over the seeds).", "",
             "| model | attack | kind | mean E(x) | shift of the mean E(x), 95% interval | per seed | moves | mean E(x,y) "
             "| E(x) went down | success |", "|---|---|---|---|---|---|---|---|---|---|"]
    for tag, model in r["models"].items():
        for i, (attack, row) in enumerate(model["attacks"].items()):
            first = tag if i == 0 else ""
            if attack == "clean":
                lines.append(f"| {first} | clean | | {row['E_x']['mean']:.3f} | | | | {row['E_xy']['mean']:.3f} | | |")
                continue
            sh = row["E_x_shift"]
            per_seed = ", ".join(f"{v:+.3f}" for v in row["E_x_shift_by_seed"])
            lines.append(f"| {first} | {attack} | {row['kind']} | {row['E_x']['mean']:.3f} | {sh['mean']:+.3f} "
                         f"[{sh['lo']:+.3f}, {sh['hi']:+.3f}] | {per_seed} | {moved(sh)} | {row['E_xy']['mean']:.3f} "
                         f"| {100 * row['frac_E_x_down']:.1f}% | {100 * row['success_rate']:.1f}% |")
    version = r["settings"].get("torchattacks")
    if version:
        checks = [f"{tag}: PGD {m['torchattacks_mean_E_x']['pgd-ce']:.3f} (ours {m['attacks']['pgd-ce']['E_x']['mean']:.3f}), "
                  f"TPGD {m['torchattacks_mean_E_x']['trades-pgd']:.3f} (ours {m['attacks']['trades-pgd']['E_x']['mean']:.3f})"
                  for tag, m in r["models"].items() if m["torchattacks_mean_E_x"]]
        lines += ["", f"The same check against torchattacks {version}, its PGD and TPGD points on the same inputs with the "
                      "global generator seeded alike, mean E(x): " + "; ".join(checks) + "."]
    return "\n".join(lines)


def claim2(results: dict) -> str:
    """Claim 2 over every model of the energy results files: the moves of the mean E(x) per attack (an
    arrow only where the 95% interval excludes 0), then per attack how many models it lowers / raises."""
    models = [(tag, m, r["settings"]) for r in results.values() for tag, m in r["models"].items()]
    attacks = [a for a in models[0][1]["attacks"] if a != "clean"]
    arrow = {"down": "lower", "up": "raise", "no clear move": "none"}
    lines = ["| model (test points) | clean mean E(x) | " + " | ".join(attacks) + " |", "|---|---|" + "---|" * len(attacks)]
    for tag, m, s in models:
        cells = [f"{m['attacks'][a]['E_x_shift']['mean']:+.3f} ({arrow[moved(m['attacks'][a]['E_x_shift'])]})" for a in attacks]
        lines.append(f"| {tag} ({s['n']}) | {m['attacks']['clean']['E_x']['mean']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "| attack | kind | lowers the mean E(x) on | raises it on | no clear move on |", "|---|---|---|---|---|"]
    for a in attacks:
        moves = [moved(m["attacks"][a]["E_x_shift"]) for _, m, _ in models]
        lines.append(f"| {a} | {models[0][1]['attacks'][a]['kind']} | " + " | ".join(
            f"{moves.count(k)} of {len(models)}" for k in ("down", "up", "no clear move")) + " |")
    seeds = sorted({s["attack_seeds"] for _, _, s in models})
    lines += ["", f"(Change of the mean E(x), attacked minus clean, eps 8/255, K = 10, the paper's attack points, "
                  f"{' or '.join(map(str, seeds))} seeds of each random attack averaged point by point; in brackets what it "
                  "counts as: lower or raise only where its 95% bootstrap interval over points excludes 0. Intervals and "
                  "per-seed shifts: the energy tables of the results page.)"]
    return "\n".join(lines)


def energy_point_rules(r: dict) -> str:
    lines = ["| model | attack | clean mean E(x) | final (the paper's): mean E(x) | E(x) went down | first adversarial: mean E(x) "
             "| E(x) went down |", "|---|---|---|---|---|---|---|"]
    for tag, model in r["models"].items():
        for attack, rules in model["point_rules"].items():
            f, a = rules["final"], rules["first-adversarial"]
            lines.append(f"| {tag} | {attack} | {model['attacks']['clean']['E_x']['mean']:.3f} | {f['mean_E_x']:.3f} | "
                         f"{100 * f['frac_E_x_down']:.1f}% | {a['mean_E_x']:.3f} | {100 * a['frac_E_x_down']:.1f}% |")
    return "\n".join(lines)


def generation_runs(r: dict) -> str:
    """One row per generate.py run of a reference_generation.py call (a preset, --compare-samplers ...)."""
    lines = [f"| run ({r['model']} generates, {r['judge']} judges) | samples | own accuracy | judge's accuracy | pixel L2 diversity |",
             "|---|---|---|---|---|"]
    for run in r["runs"]:
        s = run["settings"]
        label = run["run"] if run["run"] != "." else (
            f"`--preset {s['preset']}`: {s['steps']} steps, zeta {s['zeta']:g}, noise {s['noise_std']:g}, "
            f"sigma_pca {s['sigma_pca']:g}, retained variance {s['retained_variance']:g}")
        lines.append(f"| {label} | {run['samples']:,} | {100 * run['own_accuracy']:.1f}% | {100 * run['judge_accuracy']:.1f}% "
                     f"| {run['pixel_l2_diversity']:.2f} |")
    lines += ["", f"(Pixel L2 diversity of the training images: {r['pixel_l2_diversity_training_images']:.2f}.)"]
    return "\n".join(lines)


def generation_sweep(r: dict) -> str:
    """The sigma_pca x retained-variance grid of a --sweep-pca call: own / judge accuracy / diversity per cell."""
    cells = {}
    for run in r["runs"]:
        m = re.fullmatch(r"sigma_pca_([\d.e-]+)-variance_([\d.e-]+)", run["run"])
        cells[float(m[1]), float(m[2])] = run
    sigmas, variances = sorted({s for s, _ in cells}), sorted({v for _, v in cells})
    lines = ["| sigma_pca \\ retained variance | " + " | ".join(f"{v:g}" for v in variances) + " |",
             "|---|" + "---|" * len(variances)]
    for s in sigmas:
        lines.append(f"| {s:g}: own / judge / diversity | " + " | ".join(
            f"{100 * c['own_accuracy']:.1f} / {100 * c['judge_accuracy']:.1f} / {c['pixel_l2_diversity']:.2f}"
            for c in (cells[s, v] for v in variances)) + " |")
    run = r["runs"][0]
    lines += ["", f"({run['samples'] // 10} samples per class per cell; {r['model']} generates, {r['judge']} judges; "
                  f"pixel L2 diversity of the training images: {r['pixel_l2_diversity_training_images']:.2f}.)"]
    return "\n".join(lines)


def interval(mean, half, scale: float = 100, spec: str = ".1f") -> str:
    """mean ± the half-width of its 95% interval ('—' where there is no value)."""
    if mean is None:
        return "—"
    return f"{scale * mean:{spec}}" + (f" ± {scale * half:{spec.lstrip('+')}}" if half is not None else "")


def claims_cpu(r: dict) -> str:
    """Claim 1: per method the fall of test PGD and the energy gaps, mean ± 95% t-interval over seeds, and
    the methods' falls compared seed by seed."""
    lines = [f"Setup: {r['setup']}." if r.get("setup") else "",
             "", "| method | seeds | test PGD, best 5 epochs | test PGD, last 5 | fall | training robust, last epoch "
             "| dE, best 5 | dE, at the first drop | dE, last | dE(x,y), best 5 | dE(x,y), at the first drop | dE(x,y), last |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        pct = lambda k: interval(row[k], row[f"{k}_ci95"])  # noqa: E731
        gap = lambda k: interval(row[k], row[f"{k}_ci95"], 1, "+.3f")  # noqa: E731
        lines.append(f"| {shown(row['method'])} | {len(row['seeds'])} | {pct('peak_test')} | {pct('end_test')} | "
                     f"{pct('window_gap')} | {pct('train_adv_last')} | {gap('dE_peak')} | {gap('dE_decay')} | {gap('dE_last')} | "
                     f"{gap('dExy_peak')} | {gap('dExy_decay')} | {gap('dExy_last')} |")
    lines += ["", "| falls compared (same seeds, same training images) | seeds | difference of the falls | told apart? |",
              "|---|---|---|---|"]
    for p in r["paired_falls"]:
        apart = "—" if p["ci95"] is None else "yes" if abs(p["difference"]) > p["ci95"] else "no: the interval holds 0"
        lines.append(f"| {shown(p['methods'][0])} - {shown(p['methods'][1])} | {len(p['seeds'])} | {interval(p['difference'], p['ci95'])} "
                     f"| {apart} |")
    lines += ["", "| method | first drop after epoch | best 5 epochs, per seed | fall, per seed | seeds whose best 5 lie "
              "mostly after the first drop (3 or more of the 5) |", "|---|---|---|---|---|"]
    for method, mine in by_method(r["runs"]).items():
        windows = ", ".join(f"{run['peak_epochs'][0]}-{run['peak_epochs'][1]}" for run in mine)
        falls = ", ".join(f"{100 * run['window_gap']:.1f}" for run in mine)
        after = sum(sum(epoch > run["decay_epoch"] for epoch in range(run["peak_epochs"][0], run["peak_epochs"][1] + 1)) >= 3
                    for run in mine)
        drops = " / ".join(str(d) for d in sorted({run["decay_epoch"] for run in mine}))
        lines.append(f"| {shown(method)} | {drops} | {windows} | {falls} | {after} of {len(mine)} |")
    lines += ["", "(Accuracies in %, energies in their own units; mean ± the half-width of the 95% Student-t interval over "
                  "seeds. Best 5: the 5 consecutive epochs with the best mean test PGD; last 5: the last 5 epochs; fall: "
                  "best 5 minus last 5. dE = E(x) - E(x*), dE(x,y) = E(x,y) - E(x*,y) on the training batches, eval-mode "
                  "forward; at the first drop: the last epoch at the high learning rate. Training robust accuracy is on each method's own training attack, so it compares epochs, not "
                  "methods.)"]
    return "\n".join(lines).lstrip("\n")


def claims_lags(r: dict) -> str:
    """When, not only whether: per run the peak of smoothed test PGD, its half-fall, when the energy gaps
    leave their band, and the verdicts; then the verdicts counted per method."""
    lines = ["| run | test PGD peaks | half its fall | dE leaves its band | dE(x,y) leaves | lag dE | lag dE(x,y) | dE | dE(x,y) |",
             "|---|---|---|---|---|---|---|---|---|"]
    epoch = lambda v: "—" if v is None else str(v)  # noqa: E731
    lag = lambda v: "—" if v is None else f"{v:+d}"  # noqa: E731
    for run in r["runs"]:
        lines.append(f"| {shown(run['method'])} s{run['seed']} | {run['peak_epoch']} | {epoch(run['half_fall_epoch'])} | "
                     f"{epoch(run['dE_leaves_epoch'])} | {epoch(run['dExy_leaves_epoch'])} | {lag(run['dE_lag'])} | "
                     f"{lag(run['dExy_lag'])} | {run['dE_timing']} | {run['dExy_timing']} |")
    lines += ["", "| method | dE: precedes / accompanies / follows / stays in its band | dE(x,y): the same |", "|---|---|---|"]
    kinds = ("precedes", "accompanies", "follows", "stays in its band")
    for method, mine in by_method(r["runs"]).items():
        lines.append(f"| {shown(method)} | " + " | ".join(" / ".join(str(sum(run[f'{k}_timing'] == kind for run in mine))
                                                          for kind in kinds) for k in ("dE", "dExy")) + " |")
    return "\n".join(lines)


# The seeds of the claims-cpu runs energy.energy_pick's default was chosen on (from four candidate rules);
# runs of other seeds are a test of it.
ENERGY_PICK_DESIGN_SEEDS = (0, 1, 2)


def claims_picks(r: dict, design_seeds: tuple = ENERGY_PICK_DESIGN_SEEDS) -> str:
    """The validation pick against the energy picks (the default rule and the first design), per run, in
    epochs and test PGD; then every candidate rule's mean distance from the validation pick, over all runs
    and over the runs whose seed is not among `design_seeds` (none: every run is a test of the rules)."""
    lines = ["| run | validation pick: epoch (test PGD) | energy pick: epoch (test PGD), energy - validation | first "
             "design: epoch (test PGD), energy - validation |", "|---|---|---|---|"]
    for run in r["runs"]:
        first = run["rule_picks"]["delta_E/decay"]
        lines.append(f"| {shown(run['method'])} s{run['seed']} | {run['val_epoch']} ({100 * run['val_test']:.1f}%) | "
                     f"{run['energy_epoch']} ({100 * run['energy_test']:.1f}%), {run['energy_epoch'] - run['val_epoch']:+d} "
                     f"epochs, {100 * run['pick_gap']:+.1f} points | {first['epoch']} ({100 * first['test']:.1f}%), "
                     f"{first['epoch'] - run['val_epoch']:+d} epochs, {100 * first['gap']:+.1f} points |")
    names = {"delta_E/start": "dE, band after the burn-in (the default)", "delta_E/decay": "dE, band before the decay (the first design)",
             "delta_Exy/start": "dE(x,y), band after the burn-in", "delta_Exy/decay": "dE(x,y), band before the decay"}
    spread = lambda gaps: f"{100 * statistics.mean(gaps):+.1f} points ({100 * min(gaps):+.1f}, {100 * max(gaps):+.1f})"  # noqa: E731
    lines += ["", "| rule | mean test PGD at its pick | its pick - the validation pick's, mean (min, max) | "
                  + ("the same on the runs the redesign did not see |" if design_seeds else "runs where its pick tests at least as robust |"),
              "|---|---|---|---|"]
    for rule, name in names.items():
        picks = [run["rule_picks"][rule] for run in r["runs"]]
        if design_seeds:
            held_out = [run["rule_picks"][rule]["gap"] for run in r["runs"] if run["seed"] not in design_seeds]
            last = spread(held_out) + f" ({len(held_out)} runs)" if held_out else "—"
        else:
            last = f"{sum(p['gap'] >= 0 for p in picks)} of {len(picks)}"
        lines.append(f"| {name} | {100 * statistics.mean(p['test'] for p in picks):.1f}% | {spread([p['gap'] for p in picks])} | {last} |")
    val = statistics.mean(run["val_test"] for run in r["runs"])
    lines += ["", f"(The validation pick's mean test PGD: {100 * val:.1f}%; accuracies on the 500 test points of the "
                  "per-epoch attack, which no rule reads." + ("" if design_seeds else " Every rule was fixed before these "
                  "runs were made, so each run is a test of it.") + ")"]
    return "\n".join(lines)


def claims_trials(r: dict) -> str:
    """The calibration trials of a claims regime: the flags each changed, and where its test PGD peaked
    and how far it fell."""
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| trial | flags changed from claims-cpu | epochs run | test PGD, best 5 (epochs) | 5 epochs before the "
             "first drop | 5 after it | last 5 run | fall | training robust, last |", "|---|---|---|---|---|---|---|---|---|"]
    for t in r["trials"]:
        flags = f"`{t['flags']}`" if t["flags"] else "none"
        lines.append(f"| {t['trial']} | {flags} | "
                     f"{t['epochs_run']} of {t['epochs']} | {pct(t['best5'])} ({t['best5_epochs'][0]}-{t['best5_epochs'][1]}) | "
                     f"{pct(t['before_drop5'])} | {pct(t['after_drop5'])} | {pct(t['last5'])} | {pct(t['fall'])} | "
                     f"{pct(t['train_adv_last'])} |")
    runs = ", ".join(dict.fromkeys(f"{shown(t['method'])}, seed {t['seed']}" for t in r["trials"]))
    return "\n".join(lines + ["", f"({runs}; test PGD in %, on the 500 test points of the per-epoch attack; fall: "
                                  "best 5 minus last 5 run.)"])


def claim3(results: dict) -> str:
    """Claim 3: per generating model (a --compare-samplers run each), the PCA start alone and SGLD without and
    with momentum, scored by the model itself and by a judge it has never seen."""
    lines = ["| generator | judge | samples | PCA start alone: own / judge | SGLD, no momentum (the paper's): own / judge "
             "/ diversity | SGLD, momentum 0.5: own / judge / diversity |", "|---|---|---|---|---|---|"]
    for r in results.values():
        run = {x["run"]: x for x in r["runs"]}
        start, plain, momentum = run["pca_start-no_SGLD"], run["SGLD-no_momentum"], run["SGLD-momentum_0.5"]
        scores = lambda x: f"{100 * x['own_accuracy']:.1f} / {100 * x['judge_accuracy']:.1f}"  # noqa: E731
        lines.append(f"| {r['model']} | {r['judge']} | {plain['samples']:,} | {scores(start)} | {scores(plain)} / "
                     f"{plain['pixel_l2_diversity']:.2f} | {scores(momentum)} / {momentum['pixel_l2_diversity']:.2f} |")
    reference = {r["pixel_l2_diversity_training_images"] for r in results.values()}
    lines += ["", f"(Accuracies in %; diversity: the mean pixel L2 distance between samples of a class, "
                  f"{' / '.join(f'{v:.2f}' for v in sorted(reference))} for the training images.)"]
    return "\n".join(lines)


def attacks_reference(r: dict) -> str:
    """Robust accuracy of the reference models: PGD-20 alone, then the cascade attack by attack, with seconds."""
    keys = ["clean", "pgd-20"] + [f"+{a}" for a in r["cascade"]]
    lines = ["| model | eps | points | " + " | ".join(keys) + " | sanity flags raised |", "|---|---|---|" + "---|" * (len(keys) + 1)]
    for row in r["rows"]:
        cells = [f"{100 * row[k]['accuracy']:.1f}" + (f" ({row[k]['seconds']:.0f} s)" if k != "clean" else "") for k in keys]
        raised = ", ".join(k for k, v in row["flags"].items() if v) or "none"
        lines.append(f"| {row['model']} | {row['eps_pixels']:g}/255 | {row['n']} | " + " | ".join(cells) + f" | {raised} |")
    return "\n".join(lines)


# block name -> (results file, renderer), or ((files ...), renderer of a dict file -> result)
RENDERERS = {
    "speed-cpu": ("speed-cpu", speed_cpu),
    "speed-vs-official-trades": ("speed-vs-official-trades", speed_vs_official_trades),
    "energy-attacks-reference": ("energy-attacks-reference", energy_attacks_reference),
    "energy-point-rules-reference": ("energy-attacks-reference", energy_point_rules),
    "energy-attacks-trained": ("energy-attacks-trained", energy_attacks_reference),
    "claim2": (("energy-attacks-reference", "energy-attacks-trained"), claim2),
    "claim3": (("generation-resnet4b-samplers", "generation-cpu-w16-10k-natural-samplers", "generation-sat-s0-samplers",
                "generation-trades-s0-samplers", "generation-weat-adv-s0-samplers"), claim3),
    "attacks-reference": ("attacks-reference", attacks_reference),
    "claims-cpu": ("claims-cpu", claims_cpu),
    "claims-cpu-lags": ("claims-cpu", claims_lags),
    "claims-cpu-picks": ("claims-cpu", claims_picks),
    "claims-cpu-aug-trials": ("claims-cpu-aug-trials", claims_trials),
    "claims-cpu-aug": ("claims-cpu-aug", claims_cpu),
    "claims-cpu-aug-lags": ("claims-cpu-aug", claims_lags),
    "claims-cpu-aug-picks": ("claims-cpu-aug", functools.partial(claims_picks, design_seeds=())),
    "generation-resnet4b-paper": ("generation-resnet4b-paper", generation_runs),
    "generation-resnet4b-collapsed": ("generation-resnet4b-collapsed", generation_runs),
    "generation-resnet4b-ours": ("generation-resnet4b-ours", generation_runs),
    "generation-resnet4b-samplers": ("generation-resnet4b-samplers", generation_runs),
    "generation-resnet4b-sweep": ("generation-resnet4b-sweep", generation_sweep),
}


def files_of(name: str) -> tuple:
    """The results files a block reads (RENDERERS names one, or a tuple of several)."""
    files = RENDERERS[name][0]
    return (files,) if isinstance(files, str) else files


def render(root: str, name: str, depth: int) -> str:
    if name not in RENDERERS:
        raise ReportError(f"no renderer for the block '{name}' (known: {', '.join(RENDERERS)})")
    results = {file: load(root, file) for file in files_of(name)}
    renderer = RENDERERS[name][1]  # one file: its result; several: a dict file -> result
    body = renderer(*results.values()) if isinstance(RENDERERS[name][0], str) else renderer(results)
    return body + "\n\n" + "\n\n".join(source_line(f, r, depth) for f, r in results.items()) + "\n"


def pages(root: str) -> list:
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def regenerate(root: str = ROOT, write: bool = True) -> list:
    """Render every block of every page; returns the (page, block) pairs whose text changed, writing the
    new text only when `write`."""
    changed = []
    for page in pages(root):
        with open(page) as f:
            text = f.read()
        depth = os.path.relpath(page, root).count(os.sep)

        def fill(m):
            body = render(root, m["name"], depth)
            if body != m["body"]:
                changed.append((os.path.relpath(page, root), m["name"]))
            return m.group(1) + body + m.group(4)

        new = BLOCK.sub(fill, text)
        if write and new != text:
            with open(page + ".tmp", "w") as f:
                f.write(new)
            os.replace(page + ".tmp", page)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs from results/")
    p.add_argument("--root", default=ROOT, help="the repository to work on")
    args = p.parse_args(argv)
    try:
        changed = regenerate(args.root, write=not args.check)
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    for page, name in changed:
        print(f"{page}: block '{name}' {'differs from' if args.check else 'regenerated from'} results/")
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
