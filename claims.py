"""The paper's claim about robust overfitting, tested on the training logs of the claims sets (experiments.py
claims-cpu and claims-cpu-aug): how far test robustness falls, how the energy gaps move and when, which
checkpoint each selection rule picks, and what happens when the energies are held together (SAT + DER)
or memorisation is made harder in another way (SAT with stronger weight decay). Every statistic is read
against its own null, and every rule was fixed in code before the runs it judges.

    summary = run_summary("sat", 0, rows)       # one run, from its per-epoch log rows
    r = analyse([summary, ...], test_points=500)  # per method, the pairs, the nulls, the verdicts
    print(claims_table(r))

The per-epoch rows of every run go into the results file (experiments.epoch_columns), so every table and
figure here can be recomputed from the committed file alone (`from_file`).
"""
import numpy as np
import scipy.stats

import train
from energy import ENERGY_BAND_EPOCHS, ENERGY_BAND_PATIENCE, ENERGY_BANDS, ENERGY_GAPS, energy_pick, fit_band, lr_decay_index
from methods import METHODS

WINDOW = ENERGY_BAND_EPOCHS  # best 5 / last 5 epochs: the peak and the end of a curve
SMOOTHING = 3  # the lag rule reads each curve through a centred 3-epoch running mean
# A curve is past the midpoint of its change once it stays there 2 epochs in a row; two midpoints within 3
# epochs of each other count as together. The tolerance was set on simulated curves with a known lag of 0
# (the half-fall epoch carries 2-3 epochs of noise) before the rule read any run: see lag_simulation.
PATIENCE, LAG_TOLERANCE = ENERGY_BAND_PATIENCE, 3
NULL_DRAWS, NULL_SEED = 20_000, 0  # simulated flat curves for the nulls (fixed seed: the file is reproducible)
LAG_DRAWS, LAG_SHIFT = 400, 6  # simulated runs per scenario of the lag rule; the known lags are -6, 0, +6 epochs
TIMINGS = ("precedes", "accompanies", "follows", "no fall", "no divergence")
# The intervention arms (experiments.py): SAT + DER holds the energies together; SAT with stronger weight decay
# makes memorisation harder without aiming at the energies (the control).
BASE, INTERVENTION, CONTROL, ALIGNED = "sat", "sat-der", "sat-wd", "trades"


class ClaimsError(ValueError):
    """A run whose log cannot give the claims figures (one line, for the command-line tools)."""


def display(method: str) -> str:
    """A method's display name (SAT, WEAT-adv, ...) from its key."""
    return {"sat-wd": "SAT, weight decay (control)"}.get(method, METHODS[method].display if method in METHODS else method)


def possessive(name: str) -> str:
    """SAT's, TRADES' (a name ending in s takes the apostrophe alone)."""
    return name + ("'" if name.endswith(("s", "S")) else "'s")


def mean_interval(values: list) -> tuple:
    """Mean and the half-width of its 95% Student-t interval (None for a single value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), None
    return float(v.mean()), float(scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def running_mean(values: list, width: int = SMOOTHING) -> list:
    """Centred running mean (over fewer values at the ends)."""
    half = width // 2
    return [float(np.mean(values[max(0, i - half):i + half + 1])) for i in range(len(values))]


def window_means(values: list, width: int = WINDOW) -> np.ndarray:
    """Means of every `width` consecutive values (along the last axis)."""
    c = np.cumsum(np.asarray(values, dtype=float), axis=-1)
    c = np.concatenate([np.zeros(c.shape[:-1] + (1,)), c], axis=-1)
    return (c[..., width:] - c[..., :-width]) / width


TIE = 1e-9  # window means closer than this are equal (accuracies step by 1 / (points * WINDOW); the running sums' float error is ~1e-16)


def best_window(windows: np.ndarray) -> int:
    """The first of the best windows. Equal windows computed from different running sums can differ in their
    last float bits; a plain argmax would then pick a later one."""
    windows = np.asarray(windows)
    return int(np.flatnonzero(windows >= windows.max() - TIE)[0])


# ---------------------------------------------------------------------------------------------------
# One run


def movement(rows: list, key: str, peak: tuple) -> dict:
    """How a logged curve moves from the peak epochs (the best 5 of test PGD) to the last 5: its change, whether
    it leaves the band of its peak epochs (energy.fit_band: their mean +- 3 standard deviations), and its
    midpoint: the first epoch from the peak on where the smoothed curve is past half its change and stays
    there PATIENCE epochs in a row (None where it does not move)."""
    epochs = [r["epoch"] for r in rows if r[key] is not None]
    values = [r[key] for r in rows if r[key] is not None]
    centre, half_width = fit_band([v for e, v in zip(epochs, values) if peak[0] <= e <= peak[1]])
    change = float(np.mean(values[-WINDOW:])) - centre
    moved = abs(change) > half_width
    past = [(s - centre - change / 2) * np.sign(change) >= 0 for s in running_mean(values)]
    first = next((i for i, e in enumerate(epochs) if e >= peak[0] and i + PATIENCE <= len(past) and all(past[i:i + PATIENCE])),
                 None)
    return {"change": change, "moved": bool(moved), "midpoint": epochs[first] if moved and first is not None else None}


def timing(test: dict, gap: dict, tolerance: int = LAG_TOLERANCE) -> str:
    """The lag verdict of one energy gap against test PGD: `no fall` (test PGD does not fall out of its band),
    `no divergence` (the gap does not leave its band downwards: a divergence is the gap falling, as "dE
    diverges" reads it elsewhere), else precedes / accompanies / follows by the midpoints' distance."""
    if not test["moved"] or test["change"] > 0 or test["midpoint"] is None:
        return "no fall"
    if not gap["moved"] or gap["change"] > 0 or gap["midpoint"] is None:
        return "no divergence"
    lag = gap["midpoint"] - test["midpoint"]
    return "precedes" if lag < -tolerance else "follows" if lag > tolerance else "accompanies"


def lags(rows: list, peak: tuple) -> dict:
    """When, not only whether: test PGD's and each energy gap's midpoint after the peak, and the verdicts."""
    test = movement(rows, "test_pgd_acc", peak)
    out = {"test_moved": test["moved"], "test_midpoint": test["midpoint"]}
    for key, name in (("delta_E", "dE"), ("delta_Exy", "dExy")):
        gap = movement(rows, key, peak)
        out.update({f"{name}_moved": gap["moved"], f"{name}_midpoint": gap["midpoint"],
                    f"{name}_lag": None if None in (gap["midpoint"], test["midpoint"]) else gap["midpoint"] - test["midpoint"],
                    f"{name}_timing": timing(test, gap)})
    return out


def noise_sd(values: list) -> float:
    """The epoch-to-epoch noise of a curve, robust to its trend: 1.4826 x the median absolute deviation of its
    first differences, / sqrt(2) (the standard deviation for independent Gaussian noise)."""
    diffs = np.diff(np.asarray(values, dtype=float))
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / np.sqrt(2))


def logged_minutes(rows: list) -> float:
    """A run's time from its log: the sum of its epochs' seconds (training and the per-epoch attacks), in minutes."""
    return sum(r.get("seconds") or 0.0 for r in rows) / 60


def run_summary(method: str, seed: int, rows: list) -> dict:
    """One run's figures from its per-epoch log: test PGD at its best and last epoch and over its best and last
    5 epochs (the fall: best 5 - last 5), the energy gaps there and at the first learning-rate drop, the
    epochs and test PGD of the three picks (validation, energy, last epoch), and the lags."""
    tested = [r for r in rows if r["test_pgd_acc"] is not None]
    if len(tested) < WINDOW:
        raise ClaimsError(f"{method} seed {seed}: {len(tested)} epochs with test PGD; the claims figures need at least {WINDOW}")
    test_at = {r["epoch"]: r["test_pgd_acc"] for r in tested}
    best = max(tested, key=lambda r: (r["test_pgd_acc"], -r["epoch"]))
    decay_index = lr_decay_index(rows)
    at_decay = rows[decay_index if decay_index is not None else -1]  # the last epoch at the high rate
    windows = window_means([r["test_pgd_acc"] for r in tested])
    start = best_window(windows)
    peak = (tested[start]["epoch"], tested[start + WINDOW - 1]["epoch"])
    over = lambda key, epochs: float(np.mean([r[key] for r in rows if epochs[0] <= r["epoch"] <= epochs[1]]))  # noqa: E731
    end = (tested[-WINDOW]["epoch"], tested[-1]["epoch"])
    val_epoch, energy_epoch, last_epoch = train.select_epoch(rows, "best", len(rows)), energy_pick(rows), rows[-1]["epoch"]
    return {"method": method, "seed": seed, "n_epochs": len(rows), "n_tested": len(tested),
            "best_test": best["test_pgd_acc"], "best_epoch": best["epoch"], "last_test": tested[-1]["test_pgd_acc"],
            "peak_epochs": list(peak), "peak_test": float(windows[start]), "end_test": float(windows[-1]),
            "window_gap": float(windows[start] - windows[-1]), "mean_test": float(np.mean(list(test_at.values()))),
            "train_adv_last": rows[-1]["train_adv_acc"], "decay_epoch": at_decay["epoch"],
            "minutes": logged_minutes(rows),
            "dE_peak": over("delta_E", peak), "dE_decay": at_decay["delta_E"], "dE_last": rows[-1]["delta_E"],
            "dE_end": over("delta_E", end), "dE_divergence": over("delta_E", end) - over("delta_E", peak),
            "dExy_peak": over("delta_Exy", peak), "dExy_decay": at_decay["delta_Exy"], "dExy_last": rows[-1]["delta_Exy"],
            "dExy_end": over("delta_Exy", end), "dExy_divergence": over("delta_Exy", end) - over("delta_Exy", peak),
            "dE_noise": noise_sd([r["delta_E"] for r in rows]),
            "validation": train.validation_key(rows), "val_epoch": val_epoch, "val_test": test_at.get(val_epoch),
            "energy_epoch": energy_epoch, "energy_test": test_at.get(energy_epoch), "last_epoch": last_epoch,
            "last_pick_test": test_at.get(last_epoch),
            # every candidate rule of energy.energy_pick (the default is energy_epoch; delta_E/decay the first design)
            "rule_picks": {f"{gap}/{band}": {"epoch": e, "test": test_at.get(e)}
                           for gap in ENERGY_GAPS for band in ENERGY_BANDS for e in [energy_pick(rows, gap, band)]},
            **lags(rows, peak)}


# ---------------------------------------------------------------------------------------------------
# Nulls: what a statistic does on curves with nothing in them


def flat_falls(p: float, points: int, epochs: int, draws: int = NULL_DRAWS, seed: int = NULL_SEED) -> np.ndarray:
    """The fall (best 5 - last 5 epochs) of flat test-PGD curves: every epoch an independent binomial
    accuracy of `points` test points at accuracy p. Positive on average: the best window is a maximum."""
    acc = np.random.default_rng(seed).binomial(points, p, size=(draws, epochs)) / points
    windows = window_means(acc)
    return windows.max(axis=1) - windows[:, -1]


def tested_epochs(runs: list) -> int:
    """The number of epochs with test PGD, which the runs of a null or a simulation must share."""
    counts = sorted({r["n_tested"] for r in runs})
    if len(counts) > 1:
        raise ClaimsError(f"the runs of {', '.join(sorted({r['method'] for r in runs}))} differ in epochs with test PGD "
                          f"({', '.join(map(str, counts))}); their nulls need one length")
    return counts[0]


def fall_null(runs: list, points: int) -> dict:
    """The null of a method's falls: flat curves at its mean test PGD over the best 5 epochs (the level the
    best window sits at; the accuracy sets the binomial noise), as many tested epochs as its runs; the mean
    and 95th percentile of one run's fall and of the mean of its seeds' falls."""
    p, epochs, k = float(np.mean([r["peak_test"] for r in runs])), tested_epochs(runs), len(runs)
    falls = flat_falls(p, points, epochs)
    means = falls[:len(falls) // k * k].reshape(-1, k).mean(axis=1)
    return {"p": p, "points": points, "epochs": epochs, "draws": NULL_DRAWS, "mean": float(falls.mean()),
            "p95": float(np.percentile(falls, 95)), "seeds": k, "p95_of_mean": float(np.percentile(means, 95)),
            "runs_above_p95": int(sum(r["window_gap"] > np.percentile(falls, 95) for r in runs))}


def synthetic_run(rng, epochs: int, p: float, points: int, fall: float, gap_change: float, gap_noise: float,
                  fall_at: float, lag: float) -> list:
    """A simulated claims log: test PGD at p (binomial noise on `points`) that falls by `fall` around epoch
    `fall_at` (a logistic of 2 epochs' width), dE with Gaussian noise `gap_noise` that moves by `gap_change`
    around `fall_at + lag`; dE(x,y) the same as dE."""
    e = np.arange(1, epochs + 1)
    step = lambda centre: 1 / (1 + np.exp(-(e - centre) / 2))  # noqa: E731
    test = rng.binomial(points, np.clip(p - fall * step(fall_at), 0, 1)) / points
    gap = gap_change * step(fall_at + lag) + rng.normal(0, gap_noise, epochs)
    return [{"epoch": int(i), "test_pgd_acc": float(t), "delta_E": float(g), "delta_Exy": float(g)} for i, t, g in zip(e, test, gap)]


def lag_simulation(params: dict, draws: int = LAG_DRAWS, seed: int = NULL_SEED) -> dict:
    """How often the lag rule says each verdict on simulated runs with the set's own noise and effect sizes
    (`params`: epochs, p, points, fall, gap_change, gap_noise, fall_at): flat curves (no fall, no divergence:
    any timing verdict is false), and a known lag of -LAG_SHIFT, 0, +LAG_SHIFT epochs."""
    rng = np.random.default_rng(seed)
    scenarios = {"flat": dict(fall=0.0, gap_change=0.0, lag=0.0)}
    scenarios.update({f"lag {lag:+d}": dict(fall=params["fall"], gap_change=params["gap_change"], lag=float(lag))
                      for lag in (-LAG_SHIFT, 0, LAG_SHIFT)})
    rates = {}
    for name, effect in scenarios.items():
        counts = dict.fromkeys(TIMINGS, 0)
        for _ in range(draws):
            rows = synthetic_run(rng, params["epochs"], params["p"], params["points"], effect["fall"],
                                 effect["gap_change"], params["gap_noise"], params["fall_at"], effect["lag"])
            tested = window_means([r["test_pgd_acc"] for r in rows])
            start = best_window(tested)
            counts[lags(rows, (start + 1, start + WINDOW))["dE_timing"]] += 1
        rates[name] = {k: v / draws for k, v in counts.items()}
    return {"params": params, "draws": draws, "tolerance": LAG_TOLERANCE, "rates": rates}


def lag_params(runs: list, points: int) -> dict:
    """The lag simulation's settings from a set's runs whose test PGD fell out of its band: their median fall,
    dE change (its size, as a fall: a divergence), dE noise and test-PGD midpoint, their median test PGD over
    the best 5 epochs (the level the simulated curve falls from), and their length."""
    fell = [r for r in runs if r["test_moved"] and r["test_midpoint"] is not None] or runs
    median = lambda key: float(np.median([key(r) for r in fell]))  # noqa: E731
    return {"epochs": tested_epochs(runs), "p": median(lambda r: r["peak_test"]), "points": points,
            "fall": median(lambda r: r["window_gap"]), "gap_change": -median(lambda r: abs(r["dE_divergence"])),
            "gap_noise": median(lambda r: r["dE_noise"]),
            "fall_at": median(lambda r: r["test_midpoint"] or r["peak_epochs"][1])}


# ---------------------------------------------------------------------------------------------------
# A set of runs


def by_method(runs: list) -> dict:
    """The runs grouped by method, in their order."""
    groups = {}
    for run in runs:
        groups.setdefault(run["method"], []).append(run)
    return groups


ROW_KEYS = ("best_test", "last_test", "peak_test", "end_test", "window_gap", "train_adv_last", "dE_peak", "dE_decay",
            "dE_last", "dE_end", "dE_divergence", "dExy_peak", "dExy_decay", "dExy_last", "dExy_end", "dExy_divergence",
            "val_test", "energy_test", "last_pick_test", "minutes")


def method_rows(runs: list) -> list:
    """Per method, over its seeds: the mean and 95% t-interval of each of ROW_KEYS."""
    rows = []
    for method, mine in by_method(runs).items():
        row = {"method": method, "seeds": [r["seed"] for r in mine]}
        for key in ROW_KEYS:
            values = [r[key] for r in mine]
            row[key], row[f"{key}_ci95"] = (None, None) if None in values else mean_interval(values)
        rows.append(row)
    return rows


def paired(runs: list, a: str, b: str, key: str) -> tuple:
    """Method a's `key` minus method b's, seed by seed (the seeds both ran): mean and 95% t-interval half-width."""
    value = {(r["method"], r["seed"]): r[key] for r in runs}
    differences = [value[a, s] - value[b, s] for m, s in value if m == a and (b, s) in value]
    return mean_interval(differences) if differences else (None, None)


def paired_falls(runs: list) -> list:
    """For each pair of methods, the difference of their falls on the seeds both ran (the same seed trains on
    the same images): mean and 95% t-interval."""
    ran = {(r["method"], r["seed"]) for r in runs}
    methods, pairs = list(by_method(runs)), []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            mean, half = paired(runs, a, b, "window_gap")
            pairs.append({"methods": [a, b], "seeds": sorted(s for m, s in ran if m == a and (b, s) in ran),
                          "difference": mean, "ci95": half})
    return pairs


def correlation(x: list, y: list, groups: int = 0) -> dict:
    """Pearson's r with its 95% interval (Fisher's z: standard error 1 / sqrt(n - 3), one degree of freedom less
    per group mean taken off beyond the first, which the pooled r already pays for), and n."""
    r = float(np.corrcoef(x, y)[0, 1])
    df = len(x) - 3 - max(groups - 1, 0)
    half = 1.959964 / np.sqrt(df) if df > 0 else np.inf
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    return {"r": r, "low": float(np.tanh(z - half)), "high": float(np.tanh(z + half)), "n": len(x)}


def correlations(runs: list) -> dict:
    """Seed to seed, does the size of the fall go with how far dE fell (-(dE over the last 5 epochs - over the
    best 5)), and with the final training robust accuracy (memorisation)? Pooled over the runs, and within
    methods (each method's mean taken off first, so that differences between methods make no correlation)."""
    groups = by_method(runs)
    value = {"dE fell by": lambda r: -r["dE_divergence"], "final training robust accuracy": lambda r: r["train_adv_last"],
             "fall": lambda r: r["window_gap"]}
    centred = lambda name: [value[name](r) - np.mean([value[name](q) for q in groups[r["method"]]]) for r in runs]  # noqa: E731
    return {name: {"pooled": correlation([value["fall"](r) for r in runs], [value[name](r) for r in runs]),
                   "within methods": correlation(centred("fall"), centred(name), groups=len(groups))}
            for name in ("dE fell by", "final training robust accuracy")}


def at_trades_level(arm: dict, trades: dict) -> bool:
    """An arm holds the energies at TRADES' level: its dE over the last 5 epochs is no further from 0 than
    TRADES', or the two 95% intervals overlap."""
    low = lambda r: r["dE_end"] - (r["dE_end_ci95"] or 0)  # noqa: E731
    high = lambda r: r["dE_end"] + (r["dE_end_ci95"] or 0)  # noqa: E731
    return bool(abs(arm["dE_end"]) <= abs(trades["dE_end"]) or (low(arm) <= high(trades) and low(trades) <= high(arm)))


def above(pair) -> bool:
    """The first method's fall minus the second's, seed by seed: its 95% interval lies above 0."""
    return pair is not None and pair["ci95"] is not None and pair["difference"] - pair["ci95"] > 0


def below(pair) -> bool:
    """The first method's fall minus the second's, seed by seed: its 95% interval lies below 0."""
    return pair is not None and pair["ci95"] is not None and pair["difference"] + pair["ci95"] < 0


def shrinks(pair) -> bool:
    """An arm shrinks SAT's fall: SAT's fall minus the arm's lies above 0 (pair (SAT, arm))."""
    return above(pair)


def intervention(rows: list, pairs: list) -> dict:
    """The intervention's verdict: does holding SAT's energies together (SAT + DER) shrink its fall, and does
    the control (stronger weight decay, as much less memorisation without aiming at the energies)? First the
    manipulation check: SAT + DER's dE over its last 5 epochs at TRADES' level (as close to 0, or the two 95%
    intervals overlap). Wherever DER shrinks the fall, its fall is also compared with the control's, seed by
    seed: "the alignment matters" asks for more than the control's shrinking not being shown (DER's fall must
    lie below the control's), and where both shrink it, DER's fall below the control's says that the alignment
    adds to what less memorisation does. None without the arms."""
    row = {r["method"]: r for r in rows}
    if not {BASE, INTERVENTION, CONTROL, ALIGNED} <= set(row):
        return None
    pair = {tuple(p["methods"]): p for p in pairs}
    der, control, between = pair.get((BASE, INTERVENTION)), pair.get((BASE, CONTROL)), pair.get((INTERVENTION, CONTROL))
    if der is None or control is None or der["ci95"] is None or control["ci95"] is None:
        return {"verdict": "no verdict: the paired falls need at least 2 seeds of each arm", "der_shrinks": False,
                "control_shrinks": False, "der_aligned": False, "control_diverges": False}
    aligned = at_trades_level(row[INTERVENTION], row[ALIGNED])
    c = row[CONTROL]
    control_diverges = c["dE_divergence_ci95"] is not None and c["dE_divergence"] + c["dE_divergence_ci95"] < 0
    if not aligned:
        verdict = "no verdict: SAT + DER did not hold the energies together"
    elif shrinks(der) and not shrinks(control) and below(between):
        verdict = "the alignment matters: DER shrinks the fall, the control does not, and DER's fall is below the control's"
    elif shrinks(der) and not shrinks(control) and above(between):
        verdict = "the control's fall is lower: DER shrinks the fall; the control's is below DER's, though not shown below SAT's"
    elif shrinks(der) and not shrinks(control):
        verdict = "DER shrinks the fall; the control's shrinking is not shown, nor told apart from DER's"
    elif shrinks(der) and below(between):
        verdict = "the alignment adds to less memorisation: both shrink the fall, DER's more than the control's"
    elif shrinks(der) and control_diverges:
        verdict = "the alignment not shown to be needed: both shrink the fall while the control's dE still diverges"
    elif shrinks(der):
        verdict = "not told apart: both shrink the fall, and the control's dE does not diverge either"
    elif shrinks(control):
        verdict = "not the alignment: the control shrinks the fall, DER does not"
    else:
        verdict = "neither shrinks the fall"
    return {"verdict": verdict, "der_shrinks": shrinks(der), "control_shrinks": shrinks(control),
            "der_aligned": bool(aligned), "control_diverges": bool(control_diverges)}


def analyse(runs: list, test_points: int) -> dict:
    """Everything the claims tables show, from the run summaries: per method (with the null of its fall),
    the paired falls, the lag rule's simulated verdict rates at this set's noise, and the intervention."""
    rows = method_rows(runs)
    for row in rows:
        row["null"] = fall_null(by_method(runs)[row["method"]], test_points)
    pairs = paired_falls(runs)
    return {"rows": rows, "paired_falls": pairs, "lag_rule": lag_simulation(lag_params(runs, test_points), LAG_DRAWS),
            "intervention": intervention(rows, pairs), "test_points": test_points, "runs": runs}


def from_file(r: dict) -> dict:
    """The analysis recomputed from a claims results file's per-epoch rows alone (every run's "log")."""
    runs = [{**run_summary(run["method"], run["seed"], epoch_rows(run["log"])), "log": run["log"]} for run in r["runs"]]
    return analyse(runs, r["test_points"])


EPOCH_KEYS = ("epoch", "lr", "train_loss", "train_nat_acc", "train_adv_acc", "val_nat_acc", "val_pgd_acc",
              "val_all_nat_acc", "val_all_pgd_acc", "test_nat_acc", "test_pgd_acc", "E_nat", "E_adv", "delta_E",
              "Exy_nat", "Exy_adv", "delta_Exy", "weight_mean", "seconds")  # the log columns a results file keeps


def epoch_columns(rows: list) -> dict:
    """A run's per-epoch log as columns (those of EPOCH_KEYS it has): the results files keep them, so that every
    table can be recomputed from the committed files."""
    return {k: [row[k] for row in rows] for k in EPOCH_KEYS if k in rows[0]}


def epoch_rows(columns: dict) -> list:
    """Per-epoch rows from the columns a results file keeps."""
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


# ---------------------------------------------------------------------------------------------------
# Tables (Markdown), the same for results/SET.md and the docs (tools/report.py): each takes the claims results
# files to show, {set name: its results}, one set or several side by side


SET_NAMES = {"claims-cpu": "no augmentation", "claims-cpu-aug": "flips"}


def set_name(name: str) -> str:
    return SET_NAMES.get(name, name)


def interval(mean, half, scale: float = 100, spec: str = ".1f") -> str:
    """mean ± the half-width of its 95% interval ('—' where there is no value)."""
    if mean is None:
        return "—"
    return f"{scale * mean:{spec}}" + (f" ± {scale * half:{spec.lstrip('+')}}" if half is not None else "")


def methods_table(results: dict) -> str:
    """Per set and method: the fall of test PGD against the fall of flat noise, dE at the peak and the end,
    and the training robust accuracy at the end."""
    lines = ["| set | method | seeds | test PGD, best 5 epochs | fall (best 5 - last 5) | flat noise: mean / 95th "
             "percentile for this many seeds | dE, best 5 | dE, last 5 | training robust, last epoch | minutes per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for row in r["rows"]:
            pct = lambda k: interval(row[k], row[f"{k}_ci95"])  # noqa: E731
            gap = lambda k: interval(row[k], row[f"{k}_ci95"], 1, "+.3f")  # noqa: E731
            lines.append(f"| {set_name(name)} | {display(row['method'])} | {len(row['seeds'])} | {pct('peak_test')} | "
                         f"{pct('window_gap')} | {100 * row['null']['mean']:.1f} / {100 * row['null']['p95_of_mean']:.1f} | {gap('dE_peak')} | {gap('dE_end')} "
                         f"| {pct('train_adv_last')} | {row['minutes']:.0f} |")
    r = next(iter(results.values()))
    return "\n".join(lines + ["", f"(Test PGD-10 in % on {r['test_points']} test points; mean ± the half-width of the "
                                  "95% Student-t interval over seeds. Flat noise: the fall that flat test-PGD curves at "
                                  f"the method's mean test PGD over its best 5 epochs show with no overfitting at all ({NULL_DRAWS:,} simulated "
                                  "runs, each epoch an independent binomial draw): its mean, and the 95th percentile of its "
                                  "mean over as many runs as the method has seeds. dE = E(x) - E(x*) on the training batches (eval-mode forward), x* being the point of the method's own "
                                  "training attack (PGD-CE for SAT and its two arms, TRADES' KL attack for TRADES and "
                                  "WEAT-adv: between the two groups dE compares points of different attacks), over the best 5 "
                                  "and the last 5 epochs. Training robust accuracy is on each method's own training "
                                  "attack: it compares epochs, not methods. Minutes: the mean over seeds of a run's logged epoch "
                                  "times (training, the per-epoch attacks and logging; the committed runs: one core each, "
                                  "two runs at a time).)"])


def statements_table(results: dict) -> str:
    """Claim 1 as testable statements: each with its test, and its result and verdict in every set."""
    verdicts = {name: {s: (res, v) for s, _, res, v in statements(r)} for name, r in results.items()}
    tests = {s: t for r in results.values() for s, t, _, _ in statements(r)}
    lines = ["| statement | test | " + " | ".join(set_name(n) for n in results) + " |", "|---|---|" + "---|" * len(results)]
    for s, t in tests.items():
        cells = [f"{verdicts[n][s][0]}: **{verdicts[n][s][1]}**" if s in verdicts[n] else "—" for n in results]
        lines.append(f"| {s} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lags_table(results: dict) -> str:
    """The lag verdicts counted per set and method, then how often the rule says each on simulated runs with
    each set's noise and effect sizes."""
    lines = ["| set | method | dE: " + " / ".join(TIMINGS) + " | dE(x,y): the same |", "|---|---|---|---|"]
    for name, r in results.items():
        for method, mine in by_method(r["runs"]).items():
            lines.append(f"| {set_name(name)} | {display(method)} | " + " | ".join(" / ".join(
                str(sum(run[f'{k}_timing'] == t for run in mine)) for t in TIMINGS) for k in ("dE", "dExy")) + " |")
    lines += ["", f"| simulated runs of the set | no true lag (flat curves): any timing verdict, all false | true lag: dE "
                  f"{LAG_SHIFT} epochs early: \"precedes\" (right) | true lag 0: \"accompanies\" (right) (wrong: \"precedes\" / "
                  f"\"follows\") | true lag: dE {LAG_SHIFT} epochs late: \"follows\" (right) |",
              "|---|---|---|---|---|"]
    for name, r in results.items():
        rates = r["lag_rule"]["rates"]
        false = sum(rates["flat"][t] for t in ("precedes", "accompanies", "follows"))
        lines.append(f"| {set_name(name)} | {100 * false:.0f}% | {100 * rates[f'lag -{LAG_SHIFT}']['precedes']:.0f}% | "
                     f"{100 * rates['lag +0']['accompanies']:.0f}% ({100 * rates['lag +0']['precedes']:.0f}% / "
                     f"{100 * rates['lag +0']['follows']:.0f}%) | {100 * rates[f'lag +{LAG_SHIFT}']['follows']:.0f}% |")
    p = {name: r["lag_rule"]["params"] for name, r in results.items()}
    return "\n".join(lines + ["", "(Simulated: " + "; ".join(
        f"{set_name(n)}, {r['lag_rule']['draws']} runs per column at the set's medians: test PGD {100 * q['p']:.1f}% on "
        f"{q['points']} points falling {100 * q['fall']:.1f} points around epoch {q['fall_at']:.0f}, dE moving "
        f"{q['gap_change']:.3f} with noise {q['gap_noise']:.3f}" for (n, q), r in zip(p.items(), results.values()))
        + f"; tolerance {LAG_TOLERANCE} epochs. The other verdicts of each column: no fall or no divergence.)"])


def picks_table(results: dict) -> str:
    """Per set and method: the test PGD of the epoch each rule picks (validation, energy, last), and the energy
    pick against the other two."""
    lines = ["| set | method | validation pick | energy pick | last epoch | energy - validation: mean (min, max) | "
             "energy - last | energy pick at least as robust as validation / as last |", "|---|---|---|---|---|---|---|---|"]
    spread = lambda d: f"{100 * np.mean(d):+.1f} ({100 * min(d):+.1f}, {100 * max(d):+.1f})" if d else "—"  # noqa: E731
    for name, r in results.items():
        for method, mine in by_method(r["runs"]).items():  # a pick on an epoch without test PGD: left out, "—"
            to_val = [run["energy_test"] - run["val_test"] for run in mine if None not in (run["energy_test"], run["val_test"])]
            to_last = [run["energy_test"] - run["last_pick_test"] for run in mine
                       if None not in (run["energy_test"], run["last_pick_test"])]
            mean = lambda k: "—" if None in [run[k] for run in mine] else f"{100 * np.mean([run[k] for run in mine]):.1f}"  # noqa: E731
            lines.append(f"| {set_name(name)} | {display(method)} | {mean('val_test')} | {mean('energy_test')} | "
                         f"{mean('last_pick_test')} | {spread(to_val)} | {spread(to_last)} | {sum(d >= 0 for d in to_val)} of "
                         f"{len(to_val)} / {sum(d >= 0 for d in to_last)} of {len(to_last)} |")
    held_out = sorted({run["validation"] for r in results.values() for run in r["runs"]})
    return "\n".join(lines + ["", "(Test PGD in % at each pick, mean over seeds. Validation pick: the best validation "
                                  "PGD-20 over all epochs (" + ("every held-out image" if held_out == ["val_all_pgd_acc"]
                                  else "the first --eval-examples held-out images") + "); energy pick: "
                                  "energy.energy_pick, from the training log alone; last: no early stopping.)"])


def correlations_table(results: dict) -> str:
    """Per set and pooled over them: the fall against how far dE fell and against the final training robust
    accuracy, across runs (pooled) and within methods."""
    sets = {set_name(name): r["runs"] for name, r in results.items()}
    if len(sets) > 1:
        sets["both"] = [{**run, "method": f"{name}: {run['method']}"} for name, runs in list(sets.items()) for run in runs]
    lines = ["| runs | n | fall vs how far dE fell: r (95% interval), pooled / within methods | fall vs final training "
             "robust accuracy: the same |", "|---|---|---|---|"]
    show = lambda c: f"{c['r']:+.2f} ({c['low']:+.2f}, {c['high']:+.2f})"  # noqa: E731
    for name, runs in sets.items():
        c = correlations(runs)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(
            f"{show(c[k]['pooled'])} / {show(c[k]['within methods'])}" for k in c) + " |")
    return "\n".join(lines + ["", "(Pearson's r with its 95% interval (Fisher's z); within methods: each method's "
                                  "mean taken off first, so that differences between methods make no correlation.)"])


TRIAL_TEST_POINTS = 500  # the claims sets' per-epoch test attack (--test-examples), on which the trials ran


def trials_table(r: dict, labels: dict = None) -> str:
    """The calibration trials of a claims regime: the flags each changed, and where its test PGD peaked
    and how far it fell (`labels`: a name to show for some trials)."""
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| trial | flags changed from claims-cpu | epochs run | test PGD, best 5 (epochs) | 5 epochs before the "
             "first drop | 5 after it | last 5 run | fall | flat noise: 95th percentile of the fall | training robust, last |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in r["trials"]:
        flags = f"`{t['flags']}`" if t["flags"] else "none"
        null = np.percentile(flat_falls(t["best5"], TRIAL_TEST_POINTS, t["epochs_run"]), 95)
        lines.append(f"| {(labels or {}).get(t['trial'], t['trial'])} | {flags} | "
                     f"{t['epochs_run']} of {t['epochs']} | {pct(t['best5'])} ({t['best5_epochs'][0]}-{t['best5_epochs'][1]}) | "
                     f"{pct(t['before_drop5'])} | {pct(t['after_drop5'])} | {pct(t['last5'])} | {pct(t['fall'])} | "
                     f"{pct(null)} | {pct(t['train_adv_last'])} |")
    runs = ", ".join(dict.fromkeys(f"{display(t['method'])}, seed {t['seed']}" for t in r["trials"]))
    return "\n".join(lines + ["", f"({runs}; test PGD in %, on the {TRIAL_TEST_POINTS} test points of the per-epoch attack; "
                                  "fall: best 5 minus last 5 run; flat noise: the fall of flat curves with binomial noise on "
                                  "those points, as many epochs as the trial ran, at its best-5 accuracy (the highest of its "
                                  f"curve, so the widest of its nulls), {NULL_DRAWS:,} simulated runs.)"])


def flag_value(trial: dict, flag: str) -> float:
    """The value a trial gave one train.py flag (its 'flags' string), e.g. 1.0 for --beta 1.0."""
    words = trial["flags"].split()
    return float(words[words.index(flag) + 1])


def chosen_trials(r: dict, beta: float) -> tuple:
    """The intervention's calibration read off its trials: the SAT + DER trial with this beta, and the control
    trial (SAT with another weight decay) whose final training robust accuracy is closest to that trial's."""
    der = next(t for t in r["trials"] if t["method"] == INTERVENTION and flag_value(t, "--beta") == beta)
    controls = [t for t in r["trials"] if t["method"] == BASE and "--weight-decay" in t["flags"]]
    return der, min(controls, key=lambda t: abs(t["train_adv_last"] - der["train_adv_last"]))


def calibration_table(r: dict, labels: dict = None) -> str:
    """The trials that chose an intervention's setting: the flags each changed, its energy gaps over the last
    5 epochs and its final training robust accuracy (run without the test attack: the choice saw no test
    robustness; `labels`: a name to show for some trials)."""
    lines = ["| trial | flags changed from claims-cpu | epochs run | dE, last 5 | dE(x,y), last 5 | training robust, last |",
             "|---|---|---|---|---|---|"]
    for t in r["trials"]:
        lines.append(f"| {(labels or {}).get(t['trial'], t['trial'])} | `{t['flags']}` | {t['epochs_run']} of {t['epochs']} | "
                     f"{t['dE_last5']:+.3f} | {t['dExy_last5']:+.3f} | {100 * t['train_adv_last']:.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The figure

PANELS = (("test_pgd_acc", "test PGD accuracy %", 100), ("train_adv_acc", "training robust accuracy %", 100),
          ("delta_E", "dE = E(x) - E(x*)", 1), ("delta_Exy", "dE(x,y) = E(x,y) - E(x*,y)", 1))
GAP_SCALE_FROM = 5  # the gap panels' y axis fits every curve from this epoch on (the first epochs' spike can leave it)


def plot(r: dict, path: str, title: str = "") -> None:
    """Four panels (test PGD, training robust accuracy, dE, dE(x,y) over epochs): per method the mean over its
    seeds (thick) and each seed (thin), dotted lines at the learning-rate drops, the legend below. The gap
    panels' y axis fits the curves from epoch GAP_SCALE_FROM on, so that the late divergence shows (the early
    spike runs off it; their titles say so). Drawn 900 pixels wide with labels of at least 10 pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12})
    fig, axes = plt.subplots(2, 2, figsize=(9, 7), sharex=True)
    late = {key: [] for key, _, _ in PANELS}  # every curve's values from GAP_SCALE_FROM on
    for i, (method, mine) in enumerate(by_method(r["runs"]).items()):
        logs = [epoch_rows(run["log"]) for run in mine]
        epochs = [row["epoch"] for row in logs[0]]
        for ax, (key, label, scale) in zip(axes.flat, PANELS):
            curves = np.array([[scale * (row[key] if row[key] is not None else np.nan) for row in log] for log in logs])
            for curve in curves:
                ax.plot(epochs, curve, color=f"C{i}", linewidth=0.6, alpha=0.35)
            ax.plot(epochs, np.nanmean(curves, axis=0), color=f"C{i}", linewidth=2, label=display(method))
            ax.set_title(label)
            late[key] += [v for curve in curves for e, v in zip(epochs, curve) if e >= GAP_SCALE_FROM and np.isfinite(v)]
    for ax, (key, label, _) in list(zip(axes.flat, PANELS))[2:]:
        if late[key]:
            low, high = min(late[key]), max(late[key])
            pad = 0.08 * (high - low) or 0.05
            ax.set_ylim(low - pad, high + pad)
            ax.set_title(f"{label}\n(axis fitted from epoch {GAP_SCALE_FROM} on)", fontsize=11)
    drops = sorted({row["epoch"] for run in r["runs"] for prev, row in zip(epoch_rows(run["log"]), epoch_rows(run["log"])[1:])
                    if row["lr"] < 0.5 * prev["lr"]})
    for ax in axes.flat:
        for epoch in drops:
            ax.axvline(epoch + 0.5, color="grey", linestyle=":", linewidth=1)  # the log's lr is the next epoch's
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07 if len(labels) <= 3 else 0.11, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# Verdicts: each statement of claim 1 with the test it rests on, computed from the tables above


def side(low: float, high: float) -> str:
    """Where a 95% interval lies: above 0, below 0, or around it."""
    return "above 0" if low > 0 else "below 0" if high < 0 else "holds 0"


def statements(r: dict) -> list:
    """Claim 1 in testable statements, each (statement, test, result, verdict), from a claims results file."""
    rows = {row["method"]: row for row in r["rows"]}
    pairs = {tuple(p["methods"]): p for p in r["paired_falls"]}
    out = []
    for method in (BASE, ALIGNED, "weat-adv", INTERVENTION, CONTROL):
        if method not in rows:
            continue
        row = rows[method]
        fall, null = row["window_gap"], row["null"]
        out.append((f"{display(method)} overfits", "mean fall against the 95th percentile of flat noise for this many seeds",
                    f"{interval(fall, row['window_gap_ci95'])} vs {100 * null['p95_of_mean']:.1f}",
                    "yes" if fall > null["p95_of_mean"] else "not beyond noise"))
    for method in (BASE, ALIGNED, "weat-adv"):
        if method in rows:
            row = rows[method]
            half = row["dE_divergence_ci95"]
            where = None if half is None else side(row["dE_divergence"] - half, row["dE_divergence"] + half)
            out.append((f"{possessive(display(method))} dE diverges",
                        "dE over the last 5 epochs minus over test PGD's best 5, 95% interval",
                        interval(row["dE_divergence"], half, 1, "+.3f"),
                        {"below 0": "yes", "above 0": "no: it converges", None: "not shown (one seed)"}.get(where, "not shown")))
    for a, b in ((BASE, ALIGNED), (BASE, "weat-adv"), (ALIGNED, "weat-adv"), (BASE, INTERVENTION), (BASE, CONTROL)):
        p = pairs.get((a, b))
        if p and p["ci95"] is not None:
            where = side(p["difference"] - p["ci95"], p["difference"] + p["ci95"])
            claim = "holds" if where == "above 0" else "reversed" if where == "below 0" else "not shown"
            low, high = p["difference"] - p["ci95"], p["difference"] + p["ci95"]
            shown = interval(p["difference"], p["ci95"])  # an end that rounds to 0 on the page, though not 0: said
            edge = claim != "not shown" and round(100 * (low if low > 0 else high), 1) == 0
            out.append((f"{display(b)} overfits less than {display(a)}", "paired difference of the falls, 95% interval",
                        shown + (f", {'lower' if low > 0 else 'upper'} end {small_points(low if low > 0 else high)} points"
                                 if edge else ""),
                        claim + (", barely" if edge else "")))
    sat = [run for run in r["runs"] if run["method"] == BASE]
    if sat:
        counts = {t: sum(run["dE_timing"] == t for run in sat) for t in TIMINGS}
        top = [t for t, n in counts.items() if n == max(counts.values())]
        out.append(("SAT's dE diverges as test robustness falls", f"the lag rule (tolerance {r['lag_rule']['tolerance']} "
                    "epochs), per seed", ", ".join(f"{t} {n}" for t, n in counts.items() if n),
                    "yes" if counts["accompanies"] > len(sat) / 2 else "mixed" if len(top) > 1 else "mostly " + top[0]))
    if r.get("intervention"):
        out.append(("holding SAT's energies together stops its overfitting", "SAT + DER and the weight-decay control, "
                    "paired falls against SAT", f"DER shrinks the fall: {'yes' if r['intervention']['der_shrinks'] else 'no'}; "
                    f"the control: {'yes' if r['intervention']['control_shrinks'] else 'no'}" + control_aligned(r),
                    r["intervention"]["verdict"]))
    return out


def small_points(v: float) -> str:
    """A fraction near 0 in points with two significant digits, never in scientific notation (e.g. +0.0049)."""
    points = 100 * v
    return f"{points:+.2g}" if abs(points) >= 1e-4 else ("+" if points > 0 else "-") + "<0.0001"


def control_aligned(r: dict) -> str:
    """Where both arms shrink the fall, SAT + DER holds the energies at TRADES' level and the control ends
    there too (the same test), a clause that says so: then the arms do not separate the alignment from less
    memorisation. "" otherwise (where the verdict itself tells the arms apart, or has none)."""
    rows, v = {row["method"]: row for row in r["rows"]}, r.get("intervention") or {}
    if not (v.get("der_shrinks") and v.get("control_shrinks") and v.get("der_aligned")) \
            or not {CONTROL, ALIGNED} <= set(rows) or not at_trades_level(rows[CONTROL], rows[ALIGNED]):
        return ""
    return (f"; the control's dE also ends at TRADES' level ({rows[CONTROL]['dE_end']:+.3f} against "
            f"{rows[ALIGNED]['dE_end']:+.3f}), so the arms do not separate the alignment from less memorisation")
