"""Summaries of a study's runs (numpy only): mean, spread, Student's t intervals for the mean and for one more run."""
import numpy as np

# Student's t quantile t(0.975; df), for a two-sided 95% interval from n = df + 1 runs (any t table).
T_975 = dict(enumerate([12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
                        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
                        2.052, 2.048, 2.045, 2.042], start=1))


def summarize(values):
    """{mean, std (sample, n - 1), min, max, n, ci: 95% interval of the mean, mean +- t * std / sqrt(n), pi: 95%
    prediction interval for one more run, mean +- t * std * sqrt(1 + 1/n)}; std, ci and pi None from one value."""
    values = np.asarray(values, dtype=float)
    n, mean, std = len(values), float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)
    t = T_975.get(n - 1, 1.96)  # beyond 30 runs the normal quantile is within 4% of t's
    return {"mean": mean, "std": std, "min": float(values.min()), "max": float(values.max()), "n": n,
            "ci": None if std is None else (mean - t * std / np.sqrt(n), mean + t * std / np.sqrt(n)),
            "pi": None if std is None else (mean - t * std * np.sqrt(1 + 1 / n), mean + t * std * np.sqrt(1 + 1 / n))}


def format_summary(name, values):
    s = summarize(values)  # from two runs, t(0.975; 1) = 12.7: an interval wider than anything they can tell
    spread = "std n/a (one seed)" if s["std"] is None else f"std {s['std']:.4f}  95% CI " + (
        "n/a (two seeds)" if s["n"] < 3 else f"[{s['ci'][0]:.4f}, {s['ci'][1]:.4f}]")
    return f"{name:<26} mean {s['mean']:.4f}  {spread}  min {s['min']:.4f}  max {s['max']:.4f}  (n={s['n']})"
