"""The tables of README.md and docs/*.md, and the numbers their sentences quote, generated from results/.

    python tools/report.py            # rewrite every generated block from results/
    python tools/report.py --check    # change nothing; exit 1 and name each block that differs

A generated block is everything between a line `<!-- results: NAME -->` and the next `<!-- /results -->`.
NAME picks one of the RENDERERS below, which reads results/NAME.json (written, with its provenance, by
the command that measured it) and returns the block's Markdown: the table, the sentences that quote
its numbers, and a line saying where they come from. Edit the results file's command, not the block.
A number in a sentence sits between `<!-- value: NAME -->` and `<!-- /value -->` and is rendered by VALUES.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import claims  # noqa: E402  (the claims tables)
import experiments  # noqa: E402  (the reproduce and GPU tables)
from methods import DER_BETA  # noqa: E402  (the intervention's chosen trial)
from train import DEFAULT_EPOCHS as EPOCHS  # noqa: E402  (the paper's training epochs)

BLOCK = re.compile(r"(<!-- results: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)
VALUE = re.compile(r"(<!-- value: (?P<name>[\w.-]+) -->)(?P<body>.*?)(<!-- /value -->)", re.S)


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
    """Where a block's numbers come from, in one short line: the file, the command that wrote it, the commit,
    the data's hashes and the machine (the rest of the provenance is in the file)."""
    p = result["provenance"]
    m = p["machine"]
    data = ", data " + " / ".join(d["sha256"][:8] for d in p["data"]) if p["data"] else ""
    cpu = f" ({m['cpu_model']})" if m.get("cpu_model") else ""
    machine = f"{m['device']}{cpu}, {m['cpu_cores']} cores" if m["device"] == "cpu" else m["device"]
    link = "../" * depth + f"results/{name}.json"
    return f"*From [`results/{name}.json`]({link}): the developers ran `{p['command']}` at {p['commit'][:7]}{data}; {machine}.*"


# ---------------------------------------------------------------------------------------------------
# Renderers: results file -> Markdown


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


def official_ratios(r: dict) -> list:
    """Our epoch's time over the official TRADES code's, round by round."""
    return [x["ours_s"] / x["official_s"] for x in r["rounds"]]


def official_ratio(r: dict) -> float:
    """The median over the rounds of official_ratios (the figure the page and the front page quote)."""
    return statistics.median(official_ratios(r))


def speed_vs_official_trades(r: dict) -> str:
    rounds, ratios = r["rounds"], official_ratios(r)
    lines = ["| round | official TRADES machinery (s) | `train.py` (s) | ours / official |", "|---|---|---|---|"]
    lines += [f"| {x['round']} | {x['official_s']:.1f} | {x['ours_s']:.1f} | {q:.3f} |" for x, q in zip(rounds, ratios)]
    lines += ["", f"Median ratio over the {len(rounds)} rounds: **{official_ratio(r):.3f}** (the goal: at most "
                  f"{r['goal']:.2f}). Both sides trained {r['settings']['train_images']:,} images for one epoch "
                  f"(K = {r['settings']['steps']}, batch {r['settings']['batch_size']}, width-{r['settings']['width']} "
                  f"ResNet-18), then PGD-20 on {r['settings']['val_images']} validation images."
                  + (f" The official code at commit {r['official_source']['git_commit'][:7]}."
                     if (r.get("official_source") or {}).get("git_commit") else "")]
    return "\n".join(lines)


def moved(shift: dict, against: float = 0.0) -> str:
    """How an attack moves the mean: only an interval that excludes 0 counts (or `against`, the noise
    baseline's mean shift, for a move beyond it)."""
    return "down" if shift["hi"] < against else "up" if shift["lo"] > against else "no clear move"


def seeds_note(s: dict, per_seed_column: bool = True) -> str:
    seeds = s["attack_seeds"]
    return ("one run of each attack (seed 0)" if seeds == 1 else
            f"each random attack run with {seeds} seeds (FAB, deterministic, once): the shift is that of the point-wise "
            "mean over the seeds" + (", and the per-seed column gives each seed's own shift" if per_seed_column else ""))


def torchattacks_check(r: dict) -> list:
    """The lines comparing our PGD and TPGD points' mean E(x) with torchattacks' (none where the file has no check)."""
    version = r["settings"].get("torchattacks")
    if not version:
        return []
    checks = [f"{tag}: PGD {m['torchattacks_mean_E_x']['pgd-ce']:.3f} (ours {m['attacks']['pgd-ce']['E_x']['mean']:.3f}), "
              f"TPGD {m['torchattacks_mean_E_x']['trades-pgd']:.3f} (ours {m['attacks']['trades-pgd']['E_x']['mean']:.3f})"
              for tag, m in r["models"].items() if m["torchattacks_mean_E_x"]]
    return ["", f"The same check against torchattacks {version}, its PGD and TPGD (its TRADES attack) points on the same "
                "inputs with the global generator seeded alike, mean E(x): " + "; ".join(checks) + "."]


def model_minutes(r: dict) -> list:
    """A line with each model's minutes for the whole tool run on it (none where the file has no times)."""
    timed = [f"{tag} {m['seconds'] / 60:.{0 if m['seconds'] >= 600 else 1}f}" for tag, m in r["models"].items()
             if m.get("seconds") is not None]
    return ["", "Minutes per model (every attack and seed, both point rules, on the machine named below): "
            + ", ".join(timed) + "."] if timed else []


def energy_attacks_reference(r: dict) -> str:
    s = r["settings"]
    lines = [f"First {s['n']} test points, eps {s['eps_pixels']:g}/255, K = {s['steps']} iterations, the paper's attack "
             f"points; {seeds_note(s)}; the interval is a 95% bootstrap interval over points (2,000 draws), and the "
             "shift counts as a move only where it excludes 0. Mean E(x) and E(x, y) are the seed-0 run's; the share of "
             "points whose E(x) went down and the success rate are averaged over the seeds. Success: "
             "misclassified (for the random-class attacks cw-l2, pgd-target and cw-target: reaching the target), "
             "points misclassified to begin with included; FAB, Square and CW-L2 return the points they did not break "
             "unchanged (not down).", "",
             "| model | attack | kind | mean E(x) | shift of the mean E(x), 95% interval | per seed | moves | mean E(x,y) "
             "| E(x) went down | success |", "|---|---|---|---|---|---|---|---|---|---|"]
    for tag, model in r["models"].items():
        clean = model["attacks"]["clean"]
        attacked = [(attack, row) for attack, row in model["attacks"].items() if attack != "clean"]
        for i, (attack, row) in enumerate(attacked):
            first = f"{tag} (clean: E(x) {clean['E_x']['mean']:.3f}, E(x,y) {clean['E_xy']['mean']:.3f})" if i == 0 else ""
            sh = row["E_x_shift"]
            per_seed = ", ".join(f"{v:+.3f}" for v in row["E_x_shift_by_seed"])
            lines.append(f"| {first} | {attack} | {row['kind']} | {row['E_x']['mean']:.3f} | {sh['mean']:+.3f} "
                         f"[{sh['lo']:+.3f}, {sh['hi']:+.3f}] | {per_seed} | {moved(sh)} | {row['E_xy']['mean']:.3f} "
                         f"| {100 * row['frac_E_x_down']:.1f}% | {100 * row['success_rate']:.1f}% |")
    return "\n".join(lines + torchattacks_check(r) + model_minutes(r))


def energy_attacks_compact(r: dict) -> str:
    """The energy shifts of several models, one row per attack and one column per model: the shift of the mean
    E(x) with its 95% interval and the move it counts as (the other figures of each attack are in the file)."""
    s, models = r["settings"], r["models"]
    attacks = [a for a in next(iter(models.values()))["attacks"] if a != "clean"]
    lines = [f"First {s['n']} test points, eps {s['eps_pixels']:g}/255, K = {s['steps']} iterations, the paper's attack "
             f"points; {seeds_note(s, per_seed_column=False)}. Each cell: the shift of the mean E(x), attacked minus clean, its 95% bootstrap "
             "interval over points, and the move it counts as (only an interval that excludes 0 counts); the mean "
             "E(x, y), the per-seed shifts and the success rates are in the file.", "",
             "| attack | kind | " + " | ".join(f"{tag} (clean E(x) {m['attacks']['clean']['E_x']['mean']:.3f})"
                                             for tag, m in models.items()) + " |", "|---|---|" + "---|" * len(models)]
    for a in attacks:
        cells = [f"{m['attacks'][a]['E_x_shift']['mean']:+.3f} [{m['attacks'][a]['E_x_shift']['lo']:+.3f}, "
                 f"{m['attacks'][a]['E_x_shift']['hi']:+.3f}] {moved(m['attacks'][a]['E_x_shift'])}" for m in models.values()]
        lines.append(f"| {a} | {next(iter(models.values()))['attacks'][a]['kind']} | " + " | ".join(cells) + " |")
    return "\n".join(lines + torchattacks_check(r) + model_minutes(r))


def claim2(results: dict) -> str:
    """Claim 2 over every model of the energy results files: per attack, on how many models it lowers / raises
    the mean E(x) (a move only where the 95% interval excludes 0). Each model's shifts are the results page's."""
    models = [(tag, m, r["settings"]) for r in results.values() for tag, m in r["models"].items()]
    attacks = [a for a in models[0][1]["attacks"] if a != "clean" and all(a in m["attacks"] for _, m, _ in models)]
    baseline = "noise" in attacks  # every model has it: each attack's shift is also read against the noise's
    lines = ["| attack | kind | lowers the mean E(x) on | raises it on | no clear move on |"
             + (" below / above the noise's shift on |" if baseline else ""), "|---|---|---|---|---|" + "---|" * baseline]
    for a in attacks:
        moves = [moved(m["attacks"][a]["E_x_shift"]) for _, m, _ in models]
        beyond = [moved(m["attacks"][a]["E_x_shift"], m["attacks"]["noise"]["E_x_shift"]["mean"]) for _, m, _ in models] \
            if baseline and a != "noise" else None
        lines.append(f"| {a} | {models[0][1]['attacks'][a]['kind']} | " + " | ".join(
            f"{moves.count(k)} of {len(models)}" for k in ("down", "up", "no clear move")) + " |"
            + ((f" {beyond.count('down')} / {beyond.count('up')} of {len(models)} |" if beyond else " — |") if baseline else ""))
    seeds = sorted({s["attack_seeds"] for _, _, s in models})
    named = ", ".join(f"{tag} ({s['n']} test points)" for tag, _, s in models)
    lines += ["", f"(Models: {named}. The change of the "
                  f"mean E(x), attacked minus clean, eps 8/255, K = 10, the paper's attack points, "
                  f"{' or '.join(map(str, seeds))} seeds of each random attack averaged point by point, counts as lowering "
                  "or raising only where its 95% bootstrap interval over points excludes 0"
                  + ("; below / above the noise's shift: where that interval lies wholly below / above the noise "
                     "baseline's mean shift on that model (an attack that barely moves E(x) lies below a noise that "
                     "raises it)" if baseline else "")
                  + ". Each model's shifts with their intervals: the energy tables of the results page.)"]
    return "\n".join(lines)


def energy_point_rules(r: dict) -> str:
    lines = ["| model | attack | clean mean E(x) | final (the paper's): mean E(x) | E(x) went down | first adversarial: mean E(x) "
             "| E(x) went down |", "|---|---|---|---|---|---|---|"]
    for tag, model in r["models"].items():
        for attack, rules in model["point_rules"].items():
            f, a = rules["final"], rules["first-adversarial"]
            lines.append(f"| {tag} | {attack} | {model['attacks']['clean']['E_x']['mean']:.3f} | {f['mean_E_x']:.3f} | "
                         f"{100 * f['frac_E_x_down']:.1f}% | {a['mean_E_x']:.3f} | {100 * a['frac_E_x_down']:.1f}% |")
    return "\n".join(lines + ["", "(The first attack seed's points; the table below averages its shares over the seeds.)"])


def run_label(run: dict) -> str:
    """A run's row label: its folder name in a comparison, its settings for a single run."""
    s = run["settings"]
    return run["run"] if run["run"] != "." else (
        f"`--preset {s['preset']}`: {s['steps']} steps, zeta {s['zeta']:g}, noise {s['noise_std']:g}, "
        f"sigma_pca {s['sigma_pca']:g}, retained variance {s['retained_variance']:g}")


def generation_header(r: dict) -> str:
    return (f"| run ({r['model']} generates, {r['judge']} judges) | samples | own accuracy | judge's accuracy | pixel L2 "
            f"diversity (training images: {r['pixel_l2_diversity_training_images']:.2f}) |\n|---|---|---|---|---|")


def generation_row(run: dict) -> str:
    return (f"| {run_label(run)} | {run['samples']:,} | {100 * run['own_accuracy']:.1f}% | {100 * run['judge_accuracy']:.1f}% "
            f"| {run['pixel_l2_diversity']:.2f} |")


def generation_runs(r: dict) -> str:
    """One row per generate.py run of a reference_generation.py call (a preset, --compare-samplers ...)."""
    return "\n".join([generation_header(r)] + [generation_row(run) for run in r["runs"]])


def generation_calls(results: dict) -> str:
    """The runs of several reference_generation.py calls with the same generator, judge and training images,
    in one table."""
    first = next(iter(results.values()))
    shared = ("model", "judge", "pixel_l2_diversity_training_images")
    for name, r in results.items():
        if any(r[k] != first[k] for k in shared):
            raise ReportError(f"results/{name}.json: another generator, judge or training set than the table's first file")
    return "\n".join([generation_header(first)] + [generation_row(run) for r in results.values() for run in r["runs"]])


def generation_sweep(r: dict) -> str:
    """The sigma_pca x retained-variance grid of a --sweep-pca call, each cell placed by its own recorded
    settings: own / judge accuracy / diversity per cell."""
    cells = {(run["settings"]["sigma_pca"], run["settings"]["retained_variance"]): run for run in r["runs"]}
    if len(cells) != len(r["runs"]):
        raise ReportError("results of a sweep whose cells do not each record their own sigma_pca and retained variance")
    sigmas, variances = sorted({s for s, _ in cells}), sorted({v for _, v in cells})
    lines = ["| sigma_pca \\ retained variance | " + " | ".join(f"{v:g}" for v in variances) + " |",
             "|---|" + "---|" * len(variances)]
    for s in sigmas:
        lines.append(f"| {s:g}: own / judge / diversity | " + " | ".join(
            cell_scores(cells[s, v]) for v in variances) + " |")
    s = r["runs"][0]["settings"]
    lines += ["", f"(Each cell: {s['n_per_class']} samples per class from the PCA start, then {s['steps']} SGLD steps, zeta "
                  f"{s['zeta']:g}, noise {s['noise_std']:g}; {r['model']} generates, {r['judge']} judges; accuracies in %; "
                  f"pixel L2 diversity of the training images: {r['pixel_l2_diversity_training_images']:.2f}.)"]
    return "\n".join(lines)


def cell_scores(run: dict) -> str:
    """own / judge accuracy (%) / pixel L2 diversity of one generation run."""
    return f"{100 * run['own_accuracy']:.1f} / {100 * run['judge_accuracy']:.1f} / {run['pixel_l2_diversity']:.2f}"


def judge_lift(r: dict) -> tuple:
    """How far the authors' SGLD lifts the judge's accuracy above the PCA start's, with the half-width of its 95%
    interval (the two accuracies as independent binomials on the samples: conservative where the outcomes of a
    sample and of its start go together)."""
    run = {x["run"]: x for x in r["runs"]}
    start, plain = run["pca_start-no_SGLD"], run["SGLD-no_momentum"]
    p, q, n = plain["judge_accuracy"], start["judge_accuracy"], plain["samples"]
    return p - q, 1.959964 * (p * (1 - p) / n + q * (1 - q) / n) ** 0.5


def claim3(results: dict) -> str:
    """Claim 3: per generating model (a --compare-samplers run each), the PCA start alone and SGLD without and
    with momentum, scored by the model itself and by a judge it has never seen; the judge's lift from SGLD."""
    lines = ["| generator | judge | samples | PCA start alone: own / judge | SGLD, no momentum (the paper's): own / judge "
             "/ diversity | the judge's lift, 95% interval | SGLD, momentum 0.5: own / judge / diversity |",
             "|---|---|---|---|---|---|---|"]
    for r in results.values():
        run = {x["run"]: x for x in r["runs"]}
        start, plain, momentum = run["pca_start-no_SGLD"], run["SGLD-no_momentum"], run["SGLD-momentum_0.5"]
        scores = lambda x: f"{100 * x['own_accuracy']:.1f} / {100 * x['judge_accuracy']:.1f}"  # noqa: E731
        lift, half = judge_lift(r)
        lines.append(f"| {r['model']} | {r['judge']} | {plain['samples']:,} | {scores(start)} | {scores(plain)} / "
                     f"{plain['pixel_l2_diversity']:.2f} | {100 * lift:+.1f} ± {100 * half:.1f} | {scores(momentum)} / "
                     f"{momentum['pixel_l2_diversity']:.2f} |")
    reference = {r["pixel_l2_diversity_training_images"] for r in results.values()}
    lines += ["", f"(Accuracies in %; diversity: the mean pixel L2 distance between samples of a class, "
                  f"{' / '.join(f'{v:.2f}' for v in sorted(reference))} for the training images. The lift's interval "
                  "treats the two accuracies as independent binomials on the samples, conservative where a sample's "
                  "outcome and its start's go together.)"]
    timed = [f"{r['model']} {r['seconds'] / 60:.1f}" for r in results.values() if r.get("seconds") is not None]
    if timed:
        lines += ["", "Minutes per generator (its three runs, the PCA start's fit and the scoring, on the machine "
                      "its file names): " + ", ".join(timed) + "."]
    return "\n".join(lines)


GENERATORS = ("generation-resnet4b-samplers", "generation-cpu-w16-10k-natural-samplers", "generation-sat-s0-samplers",
              "generation-trades-s0-samplers", "generation-weat-adv-s0-samplers")  # claim 3's generators
CLAIMS_SETS = ("claims-cpu", "claims-cpu-aug")
# The claims sets whose results files are committed: a set joins once all its runs are done, and the claim-1
# tables and rows read it; the rows name the others as not finished yet.
CLAIMS_COMMITTED = ("claims-cpu", "claims-cpu-aug")
# The files the front page's claims table reads (a claim whose file is not among them says it is not run yet).
CLAIMS_SUMMARY_FILES = ("accuracy-cpu", "energy-attacks-reference", "energy-attacks-trained", *GENERATORS, *CLAIMS_COMMITTED)


def difference(p: dict) -> str:
    """A paired difference with its interval, the smallest one its seeds could detect and the paper's margin
    ('—' for a figure one seed, or no spread, cannot give)."""
    figure = lambda v, spec: "—" if v is None else format(100 * v, spec)  # noqa: E731
    return (f"{figure(p['difference'], '+.1f')} ± {figure(p['ci95'], '.1f')} points (the seeds could detect "
            f"{figure(p['detectable'], '.1f')}; paper {figure(p['paper_margin'], '+.2f')})")


def set_label(name: str) -> str:
    """A claims set as the front page's rows name it: its words and its command's name."""
    return f"{claims.set_name(name)} (`{name}`)"


def accuracy_pairs(r: dict) -> dict:
    """accuracy-cpu's paired differences by (methods, measure)."""
    return {(tuple(p["methods"]), p["measure"]): p for p in r.get("pairs", [])}


def claim0_verdict(r: dict) -> str:
    """Claim 0's verdicts, WEAT-adv - TRADES in PGD-20 and in the cascade, from accuracy-cpu's file; '' before
    that pair is in it (a set run one method at a time)."""
    acc = accuracy_pairs(r)
    if (("weat-adv", "trades"), "pgd20") not in acc or (("weat-adv", "trades"), "cascade") not in acc:
        return ""
    return f"PGD-20: **{acc[('weat-adv', 'trades'), 'pgd20']['verdict']}**; cascade: **{acc[('weat-adv', 'trades'), 'cascade']['verdict']}**"


def claim0_status(r: dict) -> str:
    """The front page's status words for claim 0: the headline pair's PGD-20 difference, what the seeds could
    detect, and both verdicts."""
    acc = accuracy_pairs(r)
    if not claim0_verdict(r):
        raise ReportError("accuracy-cpu's file has no WEAT-adv - TRADES pairs yet (a set run one method at a time)")
    pgd, cascade = acc[("weat-adv", "trades"), "pgd20"], acc[("weat-adv", "trades"), "cascade"]
    return (f"WEAT-adv - TRADES over {len(pgd['seeds'])} seeds: PGD-20 {difference(pgd)}, **{pgd['verdict']}**; "
            f"cascade {difference(cascade)}, **{cascade['verdict']}**")


def claim1_divergence(name: str, r: dict) -> str:
    """Per method of a claims set: does it overfit beyond noise, and does its dE diverge (claims.statements)?"""
    verdicts = {s: v for s, _, _, v in claims.statements(r)}
    rows = {row["method"]: row for row in r["rows"]}
    parts = []
    for method in (claims.BASE, claims.ALIGNED, "weat-adv"):
        over, diverges = verdicts.get(f"{claims.display(method)} overfits"), verdicts.get(f"{claims.possessive(claims.display(method))} dE diverges")
        if over is not None:  # the sizes beside the verdicts: a divergence a tenth of another's is still "a divergence"
            row = rows[method]
            null = row["null"]
            few = (f", beyond one flat run's noise on {null['runs_above_p95']} of {null['seeds']} seeds"
                   if over == "yes" and null["runs_above_p95"] < null["seeds"] else "")
            fall = in_points((row["window_gap"], row["window_gap_ci95"]))
            parts.append(f"{claims.display(method)} " + ("overfits" if over == "yes" else "does not overfit beyond noise")
                         + f" (fall {fall.lstrip('+')} points{few})"
                         + {"yes": " and its dE diverges", "no: it converges": ", its energies converging"}.get(
                             diverges, " without a clear divergence")
                         + f" (dE change {signed_interval((row['dE_divergence'], row['dE_divergence_ci95']))})")
    more = []
    arm = {claims.INTERVENTION: claims.display(claims.INTERVENTION), claims.CONTROL: "the weight-decay control"}
    quiet = [arm[m] for m in (claims.INTERVENTION, claims.CONTROL) if m in rows
             and verdicts.get(f"{claims.display(m)} overfits") == "not beyond noise"
             and rows[m]["dE_divergence_ci95"] is not None and rows[m]["dE_divergence"] + rows[m]["dE_divergence_ci95"] < 0]
    if quiet:
        more.append(f"the \"dE diverges\" rule also fires for {' and '.join(quiet)}, which do{'es' * (len(quiet) == 1)} "
                    "not overfit beyond noise")
    return f"{set_label(name)}: " + "; ".join([", ".join(parts), *more])


def trades_less(r: dict) -> str:
    """Claim 1's second half, its first part: does TRADES overfit less than SAT (the paired falls)?"""
    results = {s: (res, v) for s, _, res, v in claims.statements(r)}
    less = results.get(f"{claims.display(claims.ALIGNED)} overfits less than {claims.display(claims.BASE)}")
    return f"TRADES overfits less than SAT: **{less[1]}** (paired falls {less[0]}); " if less else ""


def arms_apart(r: dict) -> str:
    """How far the intervention's two arms are apart, seed by seed: falls and dE changes (DER minus the control).
    Where neither arm shrinks the fall: each arm's fall against SAT's instead, and on how many seeds SAT's own
    fall lies beyond what one flat run reaches 5 times in 100 (a SAT that hardly falls leaves nothing to shrink)."""
    methods = {run["method"] for run in r["runs"]}
    if not {claims.INTERVENTION, claims.CONTROL} <= methods:
        return ""
    if r.get("intervention", {}).get("verdict") == "neither shrinks the fall":
        falls = [f"{name} {in_points(claims.paired(r['runs'], claims.BASE, m, 'window_gap'))}"
                 for name, m in ((claims.display(claims.INTERVENTION), claims.INTERVENTION), ("the control", claims.CONTROL))]
        null = claims_row(r, claims.BASE)["null"]
        little = (": too little fall to shrink, so no evidence either way" if null["runs_above_p95"] < null["seeds"] else "")
        little += loose_control(r)
        return (f" (SAT minus each arm, seed by seed: {', '.join(falls)} points; SAT's own fall lies beyond one flat "
                f"run's noise on {null['runs_above_p95']} of its {null['seeds']} seeds{little})")
    fall = claims.paired(r["runs"], claims.INTERVENTION, claims.CONTROL, "window_gap")
    dE = claims.paired(r["runs"], claims.INTERVENTION, claims.CONTROL, "dE_divergence")
    return (f" (SAT + DER minus the control, seed by seed: fall {in_points(fall)} points, "
            f"dE change {signed_interval(dE)}{claims.control_aligned(r)}{loose_control(r)})")


def loose_control(r: dict) -> str:
    """Where the weight-decay control (chosen to memorise about as little as SAT + DER) ends with a final training
    robust accuracy no lower than SAT's, it makes memorisation no harder in that set: said beside the verdict."""
    sat, control = claims_row(r, claims.BASE), claims_row(r, claims.CONTROL)
    if not sat or not control or control["train_adv_last"] < sat["train_adv_last"]:
        return ""
    return (f"; the control memorises no less than SAT here (final training robust accuracy "
            f"{100 * control['train_adv_last']:.1f}% against {100 * sat['train_adv_last']:.1f}%)")


def set_size(name: str, seeds: int = None) -> str:
    """How many training runs a set of experiments.py holds, e.g. '12 runs'."""
    runset = experiments.RUNSETS[name]
    return f"{len(runset.methods) * (seeds or runset.seeds)} runs"


INTERVENTION_TEST = ("an intervention: SAT + DER (the energies held together) and a weight-decay control, their falls "
                     "against SAT's seed by seed")


def baseline_moves(models: list) -> str:
    """How random eps noise (analysis.BASELINES) moves E(x) on the models, where every model has it: what an
    attack's shift is read against."""
    if not all("noise" in m["attacks"] for m in models):
        return ""
    moves = [moved(m["attacks"]["noise"]["E_x_shift"]) for m in models]
    return (f"; random noise of the same size, the baseline, lowers it on {moves.count('down')} and raises it on "
            f"{moves.count('up')} of {len(models)}")


def claims_summary(results: dict) -> str:
    """The paper's claims, one row each: what the paper says, the verdict here in words, and the test behind it
    (every word read off the results files by the rules of claims.py and the claim tables). A claim whose set
    has no results file in CLAIMS_SUMMARY_FILES yet says so, with the set's command and size."""
    rows = []
    paper = experiments.PAPER["cifar10"]
    claim0 = (f"0. WEAT improves robust accuracy (WEAT-adv over TRADES on CIFAR-10, the paper's figures as transcribed, not checked against its PDF: "
              f"{paper['weat-adv'][0] - paper['trades'][0]:+.2f} PGD-20, {paper['weat-adv'][1] - paper['trades'][1]:+.2f} AutoAttack)")
    acc = accuracy_pairs(results.get("accuracy-cpu", {}))
    if claim0_verdict(results.get("accuracy-cpu", {})):
        pgd, cascade = acc[("weat-adv", "trades"), "pgd20"], acc[("weat-adv", "trades"), "cascade"]
        nat = acc.get((("weat-nat", "trades"), "pgd20"))
        scale = results["accuracy-cpu"].get("scale")
        images = f"{scale['train_images']:,} training images" if scale and scale["train_images"] else "the whole training set"
        at = "at CPU scale" + (f" ({scale['epochs']} epochs, {images}, a width-{scale['width']} ResNet-18; "
                               f"the paper: {EPOCHS} epochs, the whole training set, width 64)" if scale else "")
        rows.append((claim0, claim0_verdict(results["accuracy-cpu"]),
                     f"WEAT-adv - TRADES, {len(pgd['seeds'])} seed{'s' * (len(pgd['seeds']) != 1)} {at}: PGD-20 {difference(pgd)}, cascade "
                     f"{difference(cascade)}" + (f"; WEAT-nat - TRADES, PGD-20: {difference(nat)}" if nat else ""),
                     "#claim-0-weat-improves-robust-accuracy"))
    else:  # no file yet, or one of some methods only (a set run one method at a time)
        rows.append((claim0, f"**not run yet** (`python experiments.py accuracy-cpu`: {set_size('accuracy-cpu')})",
                     "paired differences over seeds against the smallest difference the seeds can detect",
                     "#claim-0-weat-improves-robust-accuracy"))
    sets = {name: results[name] for name in CLAIMS_SETS if name in results}
    rerun = "".join(f"; {set_label(name)}: not finished yet" for name in CLAIMS_SETS if name not in results)
    if sets:
        rows.append(("1. Robust overfitting is a divergence of natural and adversarial energies (dE)",
                     "; ".join(claim1_divergence(name, r) for name, r in sets.items()) + rerun,
                     "each method's fall against flat noise, its dE change (over the last 5 epochs minus over test PGD's best 5) "
                     "against 0, 95% intervals over seeds; dE at each method's own training attack: PGD-CE for SAT, "
                     "TRADES' KL attack for TRADES and WEAT-adv",
                     "#claim-1-robust-overfitting-as-energy-divergence"))
        verdicts = {name: r["intervention"]["verdict"] if r.get("intervention") else "not run" for name, r in sets.items()}
        rows.append(("1. TRADES mitigates robust overfitting by aligning the energies",
                     "; ".join(f"{set_label(n)}: {trades_less(sets[n])}the intervention: **{v}**" + arms_apart(sets[n])
                               for n, v in verdicts.items()) + rerun,
                     INTERVENTION_TEST, "#claim-1-robust-overfitting-as-energy-divergence"))
    else:
        rows.append(("1. Robust overfitting is an energy divergence, which TRADES mitigates by aligning the energies",
                     "**not run yet** (`python experiments.py "
                     f"claims-cpu --seeds 5`, `claims-cpu-aug`: {set_size('claims-cpu', 5)} and {set_size('claims-cpu-aug')})",
                     INTERVENTION_TEST, "#claim-1-robust-overfitting-as-energy-divergence"))
    models = [m for name in ("energy-attacks-reference", "energy-attacks-trained") for m in results[name]["models"].values()]
    kinds = {a: v["kind"] for a, v in models[0]["attacks"].items() if a != "clean"}
    count = lambda kind, way: sum(all(moved(m["attacks"][a]["E_x_shift"]) == way for a in kinds if kinds[a] == kind)  # noqa: E731
                                  for m in models)
    noise = all("noise" in m["attacks"] for m in models)  # the baseline, where every model has it
    beyond = lambda kind, way: sum(all(moved(m["attacks"][a]["E_x_shift"], m["attacks"]["noise"]["E_x_shift"]["mean"]) == way  # noqa: E731
                                       for a in kinds if kinds[a] == kind) for m in models)  # past the noise's own shift
    ce = [m for m in models if moved(m["attacks"]["pgd-ce"]["E_x_shift"]) == "down"]
    lowering = [a for a in kinds if kinds[a] == "untargeted"
                and sum(moved(m["attacks"][a]["E_x_shift"]) == "down" for m in models) > len(models) / 2]
    raising = [a for a in kinds if kinds[a] == "untargeted" and all(moved(m["attacks"][a]["E_x_shift"]) == "up" for m in models)]
    rows.append(("2. Untargeted attacks lower E(x), targeted attacks raise it",
                 f"targeted: **{'holds' if count('targeted', 'up') > len(models) / 2 else 'not shown'}** (all the targeted "
                 f"attacks raise E(x) on {count('targeted', 'up')} of {len(models)} models"
                 + (f", beyond the noise baseline's shift on {beyond('targeted', 'up')}" if noise else "") + "); untargeted: "
                 f"**{'holds' if count('untargeted', 'down') > len(models) / 2 else ('lowered on most models only by ' + ', '.join(lowering)) if lowering else 'does not hold'}** (PGD-CE lowers "
                 f"it on {len(ce)} of {len(models)} models; on {count('untargeted', 'down')} of {len(models)} all the untargeted attacks "
                 f"lower it" + (f"; {', '.join(raising)} raise it on all {len(models)}" if raising else "") + ")"
                 + baseline_moves(models),
                 "the mean E(x) shift per attack and model, moved only where its 95% bootstrap interval excludes 0",
                 "#claim-2-how-attacks-move-ex"))
    lifts = {name: judge_lift(results[name]) for name in GENERATORS}
    recognised = [name for name, (lift, half) in lifts.items() if lift - half > 0]
    natural = "generation-cpu-w16-10k-natural-samplers" in recognised  # the one generator not adversarially trained
    rows.append(("3. A robust classifier generates images (a PCA start, then SGLD: stochastic gradient Langevin dynamics, Eq. 7)",
                 f"**{'holds' if len(recognised) > len(GENERATORS) / 2 else 'not shown'}**, "
                 f"{'but not for robust classifiers alone' if natural else 'and for the robust classifiers only'}: SGLD lifts an unseen judge's accuracy on "
                 f"the samples above the PCA start's on {len(recognised)} of {len(GENERATORS)} generators, "
                 + ("the naturally trained one included (the score does not single out robustness)" if natural else
                    "and not on the naturally trained one"),
                 "the authors' sampler against its PCA start alone, scored by a model that never saw the samples (a lift "
                 "counts where its 95% interval lies above 0)",
                 "#claim-3-generation-from-a-classifier"))
    rows += NOT_RUN_CLAIMS
    lines = ["| the paper's claim | here | the test behind it |", "|---|---|---|"]
    return "\n".join(lines + [f"| {c} | {v} | [{t}](docs/claims.md{anchor}) |" for c, v, t, anchor in rows])


# The paper's claims with a command here and no committed results (their inputs could not be downloaded where
# this repo's results were made): said plainly, with the command that would test them.
NOT_RUN_CLAIMS = [
    ("4. State-of-the-art robust classifiers smooth the energy landscape (small dE on RobustBench models)",
     "**not run yet** (it needs RobustBench's weights, downloaded on first use: `python analysis.py zoo NAME ...`)",
     "each zoo model's mean dE and dE(x,y) under PGD-CE beside its PGD-20 robust accuracy; a rank test of "
     "robust accuracy against \\|dE\\| over at least 5 models",
     "#claim-4-robust-classifiers-smooth-the-energy-landscape"),
    ("5. A robust classifier's samples reach a high Inception Score and a low FID without generative training",
     "**not run yet** (it needs the standard Inception weights, downloaded on first use: `python generate.py ... --metrics fid,is`)",
     "IS and FID of the samples against the training set, as the paper's generation table",
     "#claim-5-inception-score-and-fid-of-the-samples"),
]


def attacks_reference(r: dict) -> str:
    """Robust accuracy of the reference models: PGD-20 alone, then the cascade attack by attack, with seconds."""
    keys = ["clean", "pgd-20"] + [f"+{a}" for a in r["cascade"]]
    lines = ["| model | eps | points | " + " | ".join(keys) + " | sanity flags raised |", "|---|---|---|" + "---|" * (len(keys) + 1)]
    for row in r["rows"]:
        cells = [f"{100 * row[k]['accuracy']:.1f}" + (f" ({row[k]['seconds']:.0f} s)" if k != "clean" else "") for k in keys]
        raised = ", ".join(k for k, v in row["flags"].items() if v) or "none"
        lines.append(f"| {row['model']} | {row['eps_pixels']:g}/255 | {row['n']} | " + " | ".join(cells) + f" | {raised} |")
    return "\n".join(lines)


ATTACK_NAMES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square",
                "cascade": "the cascade"}


def agreement_autoattack(r: dict) -> str:
    """Robust accuracy of each attack alone and of the cascade, official AutoAttack beside ours, with the
    points robust under one side only and the seconds each side took."""
    s, src = r["settings"], r["official_source"]
    commit = (src["git_commit"] or "no git commit")[:12]
    lines = [f"The official AutoAttack (github.com/fra31/auto-attack, commit {commit}) and `attacks.py` on "
             f"{s['model']}, the first {s['n']} test points (clean accuracy {100 * s['clean_accuracy']:.1f}%) and seed "
             f"{s['seed']} on both sides: each attack of "
             "AutoAttack \"standard\" alone on every point, then the cascade. The last two columns count the points "
             "robust under one side and broken by the other.", "",
             "| eps | attack | robust %, official | robust %, ours | seconds, official | seconds, ours "
             "| robust only under the official | robust only under ours |",
             "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        o, u, a = row["official"], row["ours"], row["agreement"]
        lines.append(f"| {row['eps_pixels']:g}/255 | {ATTACK_NAMES.get(row['attack'], row['attack'])} "
                     f"| {100 * o['robust_accuracy']:.1f} | {100 * u['robust_accuracy']:.1f} | {o['seconds']:.0f} "
                     f"| {u['seconds']:.0f} | {a['only_official_robust']} | {a['only_ours_robust']} |")
    return "\n".join(lines)


def agreement_pytorch_fid(r: dict) -> str:
    """pool3 features and FID, pytorch-fid beside metrics.py, on one state dict and the same images."""
    s = r["settings"]
    w = s["weights"]
    weights = (f"one random state dict (seed {w['random_seed']})" if "random_seed" in w else
               f"the standard FID weights file (sha256 {w['sha256'][:12]})")
    n = s["n_per_set"]
    lines = [f"pytorch-fid {r['pytorch_fid_version']} and `metrics.py`, both loading {weights}, on two sets of {n} "
             f"images ({s['images']}: the first {n} and the next {n}); pytorch-fid reads them as PNG files through its "
             f"own pipeline. Verdict (relative tolerance {r['relative_tolerance']:g}): "
             f"**{'agree' if r['agree'] else 'DISAGREE'}**."
             + (" With fewer images than the 2048 features the covariances are singular: this FID checks that the two "
                "codes agree, it measures no image quality." if n < 2048 else ""), "",
             "| measure | pytorch-fid | ours | difference |", "|---|---|---|---|",
             f"| pool3 features ({2 * n} x 2048), largest \\|difference\\| | | | {r['feature_max_abs_diff']:.3g} "
             f"(largest \\|feature\\| {r['feature_max_abs']:.3g}) |",
             f"| FID between the two sets | {r['fid_pytorch_fid']:.6f} | {r['fid_ours']:.6f} | {r['fid_abs_diff']:.3g} |",
             f"| FID, our formula on pytorch-fid's statistics | {r['fid_pytorch_fid']:.6f} "
             f"| {r['fid_ours_on_pytorch_fid_statistics']:.6f} "
             f"| {abs(r['fid_ours_on_pytorch_fid_statistics'] - r['fid_pytorch_fid']):.3g} |",
             f"| seconds (features and FID of both sets) | {r['seconds_pytorch_fid']:.0f} | {r['seconds_ours']:.0f} | |"]
    return "\n".join(lines)


# block name -> (results file, renderer), or ((files ...), renderer of a dict file -> result)
RENDERERS = {
    "speed-cpu": ("speed-cpu", speed_cpu),
    "speed-vs-official-trades": ("speed-vs-official-trades", speed_vs_official_trades),
    "energy-attacks-reference": ("energy-attacks-reference", energy_attacks_reference),
    "energy-point-rules-reference": ("energy-attacks-reference", energy_point_rules),
    "energy-attacks-trained": ("energy-attacks-trained", energy_attacks_compact),
    "claim2": (("energy-attacks-reference", "energy-attacks-trained"), claim2),
    "claim3": (GENERATORS, claim3),
    "claims-summary": (CLAIMS_SUMMARY_FILES, claims_summary),
    "attacks-reference": ("attacks-reference", attacks_reference),
    **{f"claims-{part}": (CLAIMS_COMMITTED, table) for part, table in (
        ("statements", claims.statements_table), ("methods", claims.methods_table), ("lags", claims.lags_table),
        ("picks", claims.picks_table), ("correlations", claims.correlations_table))},
    # SAT's seed 0 is in both trial tables: its rerun (the current claims-cpu run) and its first, withdrawn run
    "claims-cpu-der-trials": ("claims-cpu-der-trials",
                              lambda r: claims.calibration_table(r, {"sat-s0": "sat-s0 (claims-cpu's run)"})),
    "claims-cpu-aug-trials": ("claims-cpu-aug-trials",
                              lambda r: claims.trials_table(r, {"sat-s0": "sat-s0 (claims-cpu's first, withdrawn run)"})),
    "generation-resnet4b-calls": (("generation-resnet4b-paper", "generation-resnet4b-collapsed", "generation-resnet4b-ours"),
                                  generation_calls),
    "generation-resnet4b-samplers": ("generation-resnet4b-samplers", generation_runs),
    "generation-resnet4b-sweep": ("generation-resnet4b-sweep", generation_sweep),
    "agreement-autoattack": ("agreement-autoattack", agreement_autoattack),
    "agreement-pytorch-fid": ("agreement-pytorch-fid", agreement_pytorch_fid),
    "accuracy-cpu": ("accuracy-cpu", experiments.accuracy_table),  # claim 0's table, once its runs are committed
    "reproduce": ("gpu-h200", experiments.reproduce_table),
    "gpu-h200": ("gpu-h200", experiments.gpu_table),
}


# A number quoted in prose: <!-- value: NAME -->7.6<!-- /value --> is rendered by VALUES[NAME] (results file,
# function of its contents -> text), so a sentence cannot drift from its file (report --check sees it).
def sweep_cell(r: dict, sigma_pca: float, retained_variance: float) -> dict:
    """The run of a --sweep-pca results file with these settings."""
    for run in r["runs"]:
        if (run["settings"]["sigma_pca"], run["settings"]["retained_variance"]) == (sigma_pca, retained_variance):
            return run
    raise ReportError(f"the sweep has no cell sigma_pca {sigma_pca:g}, retained variance {retained_variance:g}")


def sweep_span(r: dict, key: str, pick=None) -> str:
    """The smallest and largest `key` over the sweep's cells, as 'lo-hi': over all cells, or over those of the
    sigma_pca that `pick` (min or max) picks."""
    sigma = pick(run["settings"]["sigma_pca"] for run in r["runs"]) if pick else None
    values = [run[key] * (100 if key.endswith("accuracy") else 1) for run in r["runs"]
              if sigma is None or run["settings"]["sigma_pca"] == sigma]
    digits = 1 if key.endswith("accuracy") else 2  # as the table shows them
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def trial_of(r: dict, trial: str) -> dict:
    """One trial of a trials file, by name."""
    for t in r["trials"]:
        if t["trial"] == trial:
            return t
    raise ReportError(f"the trials file has no trial '{trial}'")


def value_of_trial(r: dict, trial: str, key: str) -> str:
    """An accuracy of one trial of a trials file, in % as its table shows it."""
    return f"{100 * trial_of(r, trial)[key]:.1f}%"


SWEEP_DEFAULTS = (0.005, 0.95)  # generate.py's defaults (the authors' eval.py): sigma_pca, retained variance
SWEEP_OURS_START = (0.015, 0.95)  # --preset ours' PCA start (its SGLD differs)


def claims_row(r: dict, method: str) -> dict:
    """A method's row of a claims results file (an empty one where the file lacks the method)."""
    return next((row for row in r["rows"] if row["method"] == method), {})


def signed_interval(pair: tuple, digits: int = 3) -> str:
    """'+0.054 ± 0.025'; '—' for a missing mean, the mean alone without an interval (one seed)."""
    mean, half = pair
    if mean is None or mean != mean:  # missing, or NaN (no seed in common)
        return "—"
    return f"{mean:+.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")


def in_points(pair: tuple) -> str:
    """A fall (a fraction of the test points) and its half-width as points: '+1.9 ± 7.2'."""
    return signed_interval(tuple(None if v is None else 100 * v for v in pair), 1)


CLAIMS_METHODS = (("sat", claims.BASE), ("trades", claims.ALIGNED), ("weat", "weat-adv"), ("der", claims.INTERVENTION),
                  ("control", claims.CONTROL))  # a method's short name in the value names below


def seed_by_seed(r: dict, method: str, render) -> str:
    """One method's runs of a claims file, seeds in order, each rendered; '—' where the file has none."""
    return ", ".join(render(run) for run in sorted((run for run in r["runs"] if run["method"] == method),
                                                   key=lambda run: run["seed"])) or "—"


def without_largest_fall(runs: list) -> list:
    """A claims set's runs less the one with the largest fall."""
    largest = max(runs, key=lambda run: run["window_gap"])
    return [run for run in runs if run is not largest]


def dE_at_rate(rate_set: dict, r: dict, method: str) -> float:
    """The dE change a method of claims file `r` would show at its rate in `rate_set`: its dE change per unit of
    fall there, times its fall in `r`."""
    there, here = claims_row(rate_set, method), claims_row(r, method)
    return there["dE_divergence"] / there["window_gap"] * here["window_gap"]


CLAIMS_VALUES = {  # claim 1's readings on the claims page, for each committed set (claims-cpu-NAME, claims-cpu-aug-NAME)
    "der-minus-control-fall": lambda r: in_points(claims.paired(r["runs"], claims.INTERVENTION, claims.CONTROL, "window_gap")),
    "der-minus-control-dE-change": lambda r: signed_interval(claims.paired(r["runs"], claims.INTERVENTION, claims.CONTROL,
                                                                           "dE_divergence")),
    **{f"{name}-{key}": value for name, m in CLAIMS_METHODS for key, value in {
        # dE's change (its last 5 epochs minus test PGD's best 5) with its interval; dE(x,y) over the last 5 epochs
        "dE-change": lambda r, m=m: signed_interval((claims_row(r, m).get("dE_divergence"),
                                                     claims_row(r, m).get("dE_divergence_ci95"))),
        "dExy-end": lambda r, m=m: signed_interval((claims_row(r, m).get("dExy_end"), None)),
        # the fall seed by seed, in points as the tables give falls; the best 5 epochs seed by seed
        "seed-falls": lambda r, m=m: seed_by_seed(r, m, lambda run: f"{100 * run['window_gap']:.1f}"),
        "seed-dE-changes": lambda r, m=m: seed_by_seed(r, m, lambda run: f"{run['dE_divergence']:+.3f}"),
        "peak-epochs": lambda r, m=m: seed_by_seed(r, m, lambda run: "{}-{}".format(*run["peak_epochs"])),
        # the flat-noise fall that one run exceeds 5 times in 100, and how many of the method's runs exceed it
        "one-run-noise-p95": lambda r, m=m: f"{100 * claims_row(r, m)['null']['p95']:.1f}" if claims_row(r, m) else "—",
        "runs-above-one-run-noise": lambda r, m=m: (f"{claims_row(r, m)['null']['runs_above_p95']} of "
                                                    f"{claims_row(r, m)['null']['seeds']}") if claims_row(r, m) else "—",
    }.items()},
    # the within-methods correlations of the fall with how far dE fell and with final training robust accuracy,
    # leaving out the run with the largest fall (does one run carry them?)
    **{f"{name}-within-without-largest-fall": lambda r, key=key: "{r:+.2f} ({low:+.2f}, {high:+.2f})".format(
        **claims.correlations(without_largest_fall(r["runs"]))[key]["within methods"])
       for name, key in (("dE", "dE fell by"), ("memorised", "final training robust accuracy"))},
    # the energy pick against the last epoch over the methods other than the control: on how many runs it picks
    # the last epoch itself, and on how many it is strictly more robust
    **{f"energy-pick-{key}": lambda r, test=test: "{} of {}".format(
        sum(test(run) for run in r["runs"] if run["method"] != claims.CONTROL),
        sum(run["method"] != claims.CONTROL for run in r["runs"]))
       for key, test in (("is-last", lambda run: run["energy_epoch"] == run["last_epoch"]),
                         ("beats-last", lambda run: run["energy_test"] > run["last_pick_test"]))},
    # how often the lag rule finds a dE that leads test PGD by LAG_SHIFT epochs, in the set's simulated runs
    "lag-lead-found": lambda r: f"{100 * r['lag_rule']['rates'][f'lag -{claims.LAG_SHIFT}']['precedes']:.0f}%",
    # what a set cost: its runs' logged minutes, in all (core-hours) and the range of one run
    "core-hours": lambda r: f"{sum(experiments.run_minutes(r)) / 60:.0f}",
    "run-minutes": lambda r: "{:.0f}-{:.0f}".format(min(experiments.run_minutes(r)), max(experiments.run_minutes(r))),
}
VALUES = {
    **{f"{s}-{name}": (s, value) for s in CLAIMS_COMMITTED for name, value in CLAIMS_VALUES.items()},
    # the dE change TRADES and WEAT-adv would show with flips at the set without augmentation's rate
    "claims-cpu-aug-dE-at-plain-rate": (("claims-cpu", "claims-cpu-aug"), lambda rs: " and ".join(
        f"{dE_at_rate(rs['claims-cpu'], rs['claims-cpu-aug'], m):+.2f}" for m in (claims.ALIGNED, "weat-adv"))),
    # claim 3's generators (every sampler run, the PCA fit and the scoring of a model), as the claim-3 note gives them
    "generation-minutes-per-generator": (GENERATORS[1:], lambda rs: "{:.1f}-{:.1f}".format(
        min(r["seconds"] for r in rs.values()) / 60, max(r["seconds"] for r in rs.values()) / 60)),
    "accuracy-cpu-status": ("accuracy-cpu", claim0_status),  # claim 0 in the front page's status row
    # claim 2's and 3's models trained here: the seed-0 runs of claims-cpu, their test PGD at the last epoch
    "claims-cpu-s0-last-test": ("claims-cpu", lambda r: "{:.1f}-{:.1f}%".format(*(100 * f(
        run["last_test"] for run in r["runs"] if run["seed"] == 0 and run["method"] in ("sat", "trades", "weat-adv"))
        for f in (min, max)))),
    "speed-step-ratio": ("speed-cpu", lambda r: f"{r['step']['ratio']:.3f}"),
    "speed-vs-official": ("speed-vs-official-trades", lambda r: f"{official_ratio(r):.2f}"),
    "generation-paper-scores": ("generation-resnet4b-paper", lambda r: cell_scores(r["runs"][0])),
    "generation-sweep-defaults": ("generation-resnet4b-sweep", lambda r: cell_scores(sweep_cell(r, *SWEEP_DEFAULTS))),
    "generation-sweep-diversity-low": ("generation-resnet4b-sweep", lambda r: sweep_span(r, "pixel_l2_diversity", min)),
    "generation-sweep-diversity-high": ("generation-resnet4b-sweep", lambda r: sweep_span(r, "pixel_l2_diversity", max)),
    "generation-sweep-judge": ("generation-resnet4b-sweep", lambda r: sweep_span(r, "judge_accuracy")),
    **{f"generation-sweep-diversity-{name}": ("generation-resnet4b-sweep",
                                              lambda r, cell=cell: f"{sweep_cell(r, *cell)['pixel_l2_diversity']:.2f}")
       for name, cell in (("defaults", SWEEP_DEFAULTS), ("ours-start", SWEEP_OURS_START))},
    **{f"{arm}-trial-{key}": ("claims-cpu-der-trials", lambda r, i=i, value=value: value(claims.chosen_trials(r, DER_BETA)[i]))
       for i, arm in enumerate(("der", "control")) for key, value in (
           ("dE", lambda t: f"{t['dE_last5']:+.3f}"), ("robust", lambda t: f"{100 * t['train_adv_last']:.1f}%"))},
    # SAT seed 0 of claims-cpu, its first run (the flips trials read it) and its rerun (the DER trials read it)
    **{f"sat-s0-{run}-{key}": (file, lambda r, key=key: value_of_trial(r, "sat-s0", key))
       for run, file in (("first", "claims-cpu-aug-trials"), ("rerun", "claims-cpu-der-trials"))
       for key in ("train_adv_last", "best5", "last5")},
    # the flips setting's trial (claims-cpu-aug's): its best 5 epochs, and the epoch its first drop follows
    "flips-trial-best-epochs": ("claims-cpu-aug-trials", lambda r: "{}-{}".format(*trial_of(r, "flip-drops10-30")["best5_epochs"])),
    "flips-trial-first-drop": ("claims-cpu-aug-trials", lambda r: str(trial_of(r, "flip-drops10-30")["first_drop_after"])),
    # one training run of train.py's defaults (ResNet-18, CIFAR-10, 100 epochs), derived from the one GPU measurement
    "gpu-default-run-hours": ("gpu-h200", lambda r: f"{experiments.gpu_hours('cifar10', 1, EPOCHS, 0, gpu=r)['total']:.1f}"),
    "gpu-torch": ("gpu-h200", lambda r: r["provenance"]["machine"]["torch"].split("+")[0]),
    # the paper's main row as experiments.py runs it: 3 seeds, best.pt and last.pt evaluated (the experiments table's)
    "gpu-main-row-hours": ("gpu-h200", lambda r: "{:.1f}".format(experiments.gpu_hours(
        "cifar10", 3, EPOCHS, 6, experiments.expected_robust("cifar10", "weat-adv"), gpu=r)["total"])),
    "control-trial-wd": ("claims-cpu-der-trials",
                         lambda r: f"{claims.flag_value(claims.chosen_trials(r, DER_BETA)[1], '--weight-decay'):g}"),
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
    if depth == 1:  # renderers link from the repo root (docs/claims.md#...); a page in docs/ links from there
        body = body.replace("](docs/", "](")
    if len(results) > 2:  # a summary over many files: name them; each file holds its own command and commit
        links = ", ".join(f"[`{f}`]({'../' * depth}results/{f}.json)" for f in results)
        paper = (f" The paper's figures: `experiments.PAPER` ({experiments.PAPER_SOURCE})."
                 if name == "claims-summary" else "")
        return body + f"\n\n*From {links} in results/; each names the command, commit, data and machine that wrote it.{paper}*\n"
    return body + "\n\n" + "\n\n".join(source_line(f, r, depth) for f, r in results.items()) + "\n"


def pages(root: str) -> list:
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def regenerate(root: str = ROOT, write: bool = True) -> list:
    """Render every block of every page; returns the (page, block) pairs whose text changed, writing the
    new text only when `write`."""
    changed, rendered = [], {}
    for page in pages(root):
        with open(page) as f:
            text = f.read()
        depth = os.path.relpath(page, root).count(os.sep)

        def fill(m):
            body = render(root, m["name"], depth)
            if body != m["body"]:
                changed.append((os.path.relpath(page, root), m["name"]))
            return m.group(1) + body + m.group(4)

        def value(m):
            if m["name"] not in VALUES:
                raise ReportError(f"no renderer for the value '{m['name']}' (known: {', '.join(VALUES)})")
            file, render_value = VALUES[m["name"]]  # one results file, or a tuple of several (a dict name -> file)
            body = render_value(load(root, file) if isinstance(file, str) else {f: load(root, f) for f in file})
            if body != m["body"]:
                changed.append((os.path.relpath(page, root), m["name"]))
            return m.group(1) + body + m.group(4)

        new = VALUE.sub(value, BLOCK.sub(fill, text))
        if new != text:
            rendered[page] = new
    if write:  # only once every page rendered: a file a block cannot read leaves every page as it was
        for page, new in rendered.items():
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
