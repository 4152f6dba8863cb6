"""The rules of a run's settings, written once for train.py, benchmarks/seeds.py and plumbing/runs.py: their limits,
continuing a run or a study with them, and the data it goes on with."""


def check_settings(s):
    """The limits of the recipe's settings, given as flags (train.parse_args) or read from a state: ValueError."""
    for name, low, high in (("epochs", 1, 31), ("batch_size", 1, 31), ("seed", 0, 64)):  # torch takes -2**63 too
        if not low <= s[name] < 2**high:
            raise ValueError(f"--{name.replace('_', '-')} must be from {low} to 2**{high} - 1, got {s[name]}")
    if not 0 < s["lr"] < 1e30:  # past float32's range: every weight would be infinite after the first step
        raise ValueError(f"--lr must be a positive number below 1e30, got {s['lr']}")
    for name in ("dropout", "label_smoothing", "weight_decay"):
        if not 0 <= s[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 0 and below 1, got {s[name]}")


def continued_settings(given, fixed, done, where):
    """The one rule for continuing a run (train.py --resume) or a study (seeds.py): its settings stay its first
    call's, which a flag may repeat, not change; --epochs may go past those done, unless a schedule is laid over the
    run's length. given: {name: value, None if not given}; returns the settings to continue with."""
    for name, value in given.items():
        if name != "epochs" and value is not None and value != fixed[name]:
            raise ValueError(f"--{name.replace('_', '-')} {value}: {where} has {fixed[name]}, fixed by its first call; "
                             "leave the flag out to continue it, or choose another --out-dir")
    epochs = given.get("epochs") or fixed["epochs"]
    if epochs != fixed["epochs"] and fixed["schedule"] != "constant":
        raise ValueError(f"--epochs {epochs}: {where} lays its {fixed['schedule']} schedule over {fixed['epochs']} "
                         "epochs, and cannot be made longer or shorter")
    if epochs < done:
        raise ValueError(f"--epochs {epochs} is fewer than the {done} {where} has trained")
    return {**fixed, "epochs": epochs}


def check_data(state, data, where):
    """The one rule for data: a run or a study goes on, and is compared, only on what it trained on (moved is fine)."""
    different = sorted(name for name in data if data[name] != state["data"].get(name))
    if different:
        raise ValueError(f"--data-dir holds other data than {where} trained on ({', '.join(different)} differ): "
                         "moved files are fine, changed ones make another run")
