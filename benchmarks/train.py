"""Seconds per step and peak memory of `cai train sft|dpo` beside a plain TRL script with TRL's defaults.

    python benchmarks/train.py [--stages sft,dpo] [--sides cai,trl,before] [--steps 8] [--repeat 1]
                               [--json FILE] [--phases] [--set STAGE:KEY=VALUE ...] [--trl-set STAGE:KEY=VALUE ...]

Every side trains the default model on the same 32 rows (benchmarks/train_rows.py) for the same
number of steps, one process per run and one run at a time (`--repeat` alternates the sides):

- cai: the real `cai train <stage> --device cpu --max-steps N`, i.e. the bundled CPU recipe;
  `--set` adds recipe keys (to measure one setting on its own).
- trl: TRL's trainer and config with TRL's defaults, except what must match for the figures to
  compare: the rows, the LoRA settings (r, alpha, dropout, targets), the batch size, max_length
  and the step count, read from the same CPU recipe; use_cpu. `--trl-set` adds config fields.
- before: `cai train` with the recipe keys this benchmark's work changed set back as they were
  (BEFORE below), so before and after are measured in one run.

Seconds per step are the median over the optimizer steps, timed by a callback: the model load,
the dataset preparation and whatever TRL does before the first step (the reference
log-probabilities, when they are precomputed) are left out and reported as `setup_s`. CPU
seconds per step (the process's, all threads) are reported beside them: on a shared machine they
move less with the other work than wall time does, and each run records the load average. Peak
memory is the process's VmHWM when training ends (`peak_mib`, the model load included);
`exit_peak_mib` adds what runs after (cai's merge and save). `--phases` samples the resident
memory every few milliseconds and reports its peak within each part of a step: reference
forward, policy forward, the vocabulary projection (TRL's chunked log-probabilities, forward and
backward), the rest of the backward, and the optimizer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("sft", "dpo")
SIDES = ("cai", "trl", "before")
# `--before`: the CPU recipes' keys as they were before the memory work of issue 19, over today's
# recipe (a --config layer, so null unsets a key), to measure before and after in one run.
BEFORE = {
    "sft": {"bf16": False, "gradient_checkpointing": False},
    "dpo": {"bf16": False, "gradient_checkpointing": False, "precompute_ref_log_probs": False},
}
NAMES = {"cai": "cai recipe", "trl": "TRL defaults", "before": "cai before"}


# ---------------------------------------------------------------- memory


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_mib() -> float:
    return round(_kib("VmHWM") / 1024, 1)


class PhaseSampler:
    """The peak resident memory within each labelled part of the work, sampled on a thread.

    Torch releases the GIL inside its kernels, so the thread keeps sampling while they run.
    """

    def __init__(self, every_s: float = 0.002):
        self.label = "setup"
        self.peaks: dict[str, int] = {}
        self._every = every_s
        self._page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with open("/proc/self/statm") as fh:
            while not self._stop.is_set():
                fh.seek(0)
                rss = int(fh.read().split()[1]) * self._page_kib
                if rss > self.peaks.get(self.label, 0):
                    self.peaks[self.label] = rss
                time.sleep(self._every)

    def start(self) -> PhaseSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {k: round(v / 1024, 1) for k, v in self.peaks.items()}

    def wrap(self, fn, label: str | None = None, pick=None):
        """`fn` with the label set while it runs (`pick(label before)` may choose it per call)."""
        sampler = self

        def wrapped(*args, **kwargs):
            before = sampler.label
            sampler.label = pick(before) if pick else label
            try:
                return fn(*args, **kwargs)
            finally:
                sampler.label = before

        return wrapped


# ---------------------------------------------------------------- the training process (child)


def instrument(result: dict, phases: bool) -> None:
    """Time every step and read the peak memory when training ends, whoever builds the trainer."""
    import torch
    import transformers

    sampler = PhaseSampler().start() if phases else None
    steps: list[float] = []
    cpu: list[float] = []  # CPU seconds of the process per step: less swayed than wall time by other work

    class StepTimer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t, self.cpu = time.perf_counter(), time.process_time()
            if sampler:
                sampler.label = "step (other)"

        def on_pre_optimizer_step(self, args, state, control, **kw):
            if sampler:
                sampler.label = "optimizer"

        def on_step_end(self, args, state, control, **kw):
            steps.append(time.perf_counter() - self.t)
            cpu.append(time.process_time() - self.cpu)
            if sampler:
                sampler.label = "step (other)"

    original = transformers.Trainer.train

    def train(self, *args, **kwargs):
        result["setup_s"] = round(time.perf_counter() - result.pop("_t0"), 1)
        result["loaded_mib"] = round(_kib("VmRSS") / 1024, 1)
        result["load_avg_start"] = round(os.getloadavg()[0], 2)  # the machine's other work, for reading the times
        self.add_callback(StepTimer())
        if sampler:
            self.model.register_forward_pre_hook(
                lambda m, a: setattr(sampler, "label",
                                     "policy forward" if torch.is_grad_enabled() else "reference forward"))
            self.accelerator.backward = sampler.wrap(self.accelerator.backward, "backward (layers)")
        out = original(self, *args, **kwargs)
        result["peak_mib"] = peak_mib()
        result["load_avg_end"] = round(os.getloadavg()[0], 2)
        result["steps"] = self.state.global_step
        result["step_s"] = [round(s, 3) for s in steps]
        result["step_cpu_s"] = [round(s, 3) for s in cpu]
        run = next((h for h in reversed(self.state.log_history) if "train_runtime" in h), {})
        result["train_runtime_s"] = round(run.get("train_runtime", 0.0), 2)
        a = self.args
        result["settings"] = {k: getattr(a, k, None) for k in (
            "per_device_train_batch_size", "max_length", "gradient_checkpointing", "bf16",
            "precompute_ref_log_probs", "padding_free", "activation_offloading")}
        result["settings"]["dtype"] = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        if sampler:
            result["phases_mib"] = sampler.stop()
        return out

    transformers.Trainer.train = train
    if sampler:
        try:  # TRL's vocabulary projection in tiles (its log-probabilities without full logits)
            from trl.kernels.chunked_logprob import ChunkedLogProbFunction as F
        except ImportError:
            return
        # autograd runs a Function's forward without grad, so the caller's label tells policy from reference
        F.forward = staticmethod(sampler.wrap(F.forward, pick=lambda before: "lm head forward (reference)"
                                              if before.startswith("reference") else "lm head forward (policy)"))
        F.backward = staticmethod(sampler.wrap(F.backward, "lm head backward"))


def run_cai(stage: str, data: Path, out: Path, steps: int, sets: list[str], config: Path | None = None) -> None:
    from cai.cli import main

    argv = ["train", stage, "--data", str(data), "--out", str(out), "--max-steps", str(steps), "--device", "cpu"]
    if config:
        argv += ["--config", str(config)]
    for s in sets:
        argv += ["--set", s]
    main(argv, standalone_mode=False)


def run_trl(stage: str, data: Path, out: Path, steps: int, sets: list[str]) -> None:
    """Plain TRL: its trainer and config with their defaults, but for what must match cai's run."""
    import yaml
    from datasets import Dataset
    from peft import LoraConfig

    from cai.models import resolve
    from cai.train.recipe import load_recipe
    from cai.train.registry import get_stage

    recipe = load_recipe(stage, device="cpu")
    spec = get_stage(stage)
    raw = [json.loads(line) for line in data.read_text().splitlines()]
    rows = spec.rows(raw, str(data))  # the rows exactly as cai hands them to TRL
    match = {"per_device_train_batch_size": recipe.trl["per_device_train_batch_size"],
             "max_length": recipe.trl["max_length"], "max_steps": steps, "use_cpu": True, "report_to": "none"}
    for s in sets:
        k, v = s.split("=", 1)
        match[k] = yaml.safe_load(v)
    c = recipe.cai
    lora = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout, target_modules=c.lora_targets,
                      task_type="CAUSAL_LM")
    import trl

    trainer_cls, config_cls = getattr(trl, spec.trainer), getattr(trl, spec.trainer.removesuffix("Trainer") + "Config")
    trainer = trainer_cls(model=str(resolve("smollm2-135m")), args=config_cls(output_dir=str(out), **match),
                          train_dataset=Dataset.from_list(rows), peft_config=lora)
    trainer.train()


def child(args) -> None:
    result: dict = {"stage": args.stage, "side": args.child, "sets": args.set, "_t0": time.perf_counter()}
    t0 = result["_t0"]
    instrument(result, args.phases)
    if args.child == "trl":
        run_trl(args.stage, Path(args.data), Path(args.out), args.steps, args.set)
    elif args.child == "before":
        import yaml

        config = Path(args.out).with_suffix(".before.yaml")
        config.write_text(yaml.safe_dump(BEFORE[args.stage]))
        run_cai(args.stage, Path(args.data), Path(args.out), args.steps, args.set, config)
    else:
        run_cai(args.stage, Path(args.data), Path(args.out), args.steps, args.set)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["exit_peak_mib"] = peak_mib()
    steps = result.get("step_s") or [0.0]
    result["s_per_step"] = round(statistics.median(steps), 3)
    result["cpu_s_per_step"] = round(statistics.median(result.get("step_cpu_s") or [0.0]), 3)
    Path(args.result).write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------- the benchmark (parent)


def write_data(folder: Path) -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    from train_rows import preference_rows, sft_rows

    paths = {}
    for stage, rows in (("sft", sft_rows()), ("dpo", preference_rows())):
        paths[stage] = folder / f"{stage}.jsonl"
        paths[stage].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def run_child(side: str, stage: str, data: Path, folder: Path, args, sets: list[str], rep: int) -> dict:
    result = folder / f"{stage}-{side}-{rep}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--stage", stage, "--data", str(data),
           "--out", str(folder / f"out-{stage}-{side}-{rep}"), "--steps", str(args.steps), "--result", str(result)]
    for s in sets:
        cmd += ["--set", s]
    if args.phases:
        cmd.append("--phases")
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} {stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def for_stage(pairs: list[str], stage: str) -> list[str]:
    out = []
    for p in pairs:
        st, _, kv = p.partition(":")
        if st not in STAGES or "=" not in kv:
            raise SystemExit(f"--set/--trl-set {p!r}: expected STAGE:KEY=VALUE with STAGE in {', '.join(STAGES)}")
        if st == stage:
            out.append(kv)
    return out


def summarize(runs: list[dict]) -> dict:
    """One side's figures over its repeats: the median of each, the runs themselves kept."""
    first = runs[0]
    if len(runs) == 1:
        return first
    med = {k: round(statistics.median(r[k] for r in runs), 3) for k in (
        "s_per_step", "cpu_s_per_step", "peak_mib", "exit_peak_mib", "setup_s", "wall_s")}
    return {**{k: first[k] for k in ("stage", "side", "sets", "settings")}, **med, "runs": runs}


def table(results: dict) -> tuple[list[str], dict]:
    lines = [f"{'stage':<6}{'run':<16}{'s/step':>9}{'CPU s/step':>12}{'peak MiB':>11}{'setup s':>9}  settings"]
    ratios = {}
    for stage, by_side in results.items():
        for side, r in by_side.items():
            s = r["settings"]
            flags = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("per_device_train_batch_size",) and v
                              not in (None, False))
            name = NAMES[side]
            lines.append(f"{stage:<6}{name:<16}{r['s_per_step']:>9.2f}{r['cpu_s_per_step']:>12.2f}{r['peak_mib']:>11.0f}"
                         f"{r['setup_s']:>9.1f}  {flags}")
        for over, label in (("trl", "cai / TRL"), ("before", "cai / before")):
            if "cai" in by_side and over in by_side:
                c, t = by_side["cai"], by_side[over]
                q = {k: round(c[k] / t[k], 3) for k in ("s_per_step", "cpu_s_per_step", "peak_mib")}
                ratios.setdefault(stage, {})["cai_over_trl" if over == "trl" else "cai_over_before"] = q
                lines.append(f"{stage:<6}{label:<16}{q['s_per_step']:>9.2f}{q['cpu_s_per_step']:>12.2f}"
                             f"{q['peak_mib']:>11.2f}")
    return lines, ratios


def versions() -> dict:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("torch", "transformers", "trl", "peft")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default="sft,dpo", help="Comma-separated: sft, dpo.")
    ap.add_argument("--sides", default="cai,trl", help="Comma-separated: cai, trl, before (cai's recipe as it was "
                    "before the issue-19 memory settings).")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1, help="Runs of each side, alternating; figures are medians.")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE:KEY=VALUE",
                    help="A recipe key for cai's run of STAGE (cai train --set), e.g. dpo:gradient_checkpointing=false.")
    ap.add_argument("--trl-set", action="append", default=[], metavar="STAGE:KEY=VALUE",
                    help="A config field for the TRL run of STAGE, over TRL's default.")
    ap.add_argument("--phases", action="store_true", help="Peak memory within each part of a step.")
    ap.add_argument("--json", default=None, help="Write the figures here.")
    # one training process (internal)
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    stages = [s for s in args.stages.split(",") if s]
    sides = [s for s in args.sides.split(",") if s]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="cai-train-bench-") as tmp:
        folder = Path(tmp)
        data = write_data(folder)
        for stage in stages:
            # One at a time (two trainings would share the cores and the memory), and with --repeat
            # alternating, so a change in the machine's other load falls on both sides alike.
            for rep in range(args.repeat):
                for side in sides:
                    sets = for_stage(args.trl_set if side == "trl" else args.set, stage)
                    r = run_child(side, stage, data[stage], folder, args, sets, rep)
                    results.setdefault(stage, {}).setdefault(side, []).append(r)
                    print(f"  {stage} {side}: {r['s_per_step']:.2f} s/step, peak {r['peak_mib']:.0f} MiB "
                          f"(setup {r['setup_s']} s, wall {r['wall_s']} s; load average {r['load_avg_start']} → "
                          f"{r['load_avg_end']})", flush=True)
                    if r.get("phases_mib"):
                        print("    " + ", ".join(f"{k} {v:.0f}" for k, v in r["phases_mib"].items()), flush=True)
    results = {stage: {side: summarize(runs) for side, runs in by_side.items()} for stage, by_side in results.items()}
    lines, ratios = table(results)
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratios": ratios, "steps": args.steps,
                                               "repeat": args.repeat, "sets": args.set, "trl_sets": args.trl_set,
                                               "cpus": os.cpu_count(), "versions": versions()}, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
