"""Online RL: TRL's GRPOTrainer (default) or RLOOTrainer on prompts.

TRL 1.x has no PPOTrainer; GRPO and RLOO optimise PPO's clipped objective with a group baseline
instead of a value network. The reward is either a trained reward model (`cai train reward`
output), scored on prompt + completion through the chat template, or the AI judge: P(completion
better than the reference answer of the same prompt), with both orders averaged by the judge.
The reference is the un-revised answer of the preference row (its `rejected`), so the policy is
paid for beating what the model said before the constitution's critiques. The judge is calibrated
as `cai judge` calibrates it before training starts, and its probability is mapped by the fitted
temperature (cai/train/reward_calibration.py).
"""

from __future__ import annotations

from typing import Literal

import click
from pydantic import Field

from cai.backends.registry import NAMES
from cai.errors import UsageError
from cai.judge.figures import MIN_AGREEMENT
from cai.train.data import prompt_rows
from cai.train.settings import Settings
from cai.train.stage import Job, Stage
from cai.train.weights import load_full, load_tokenizer, model_arg

TRAINERS = {"grpo": "GRPOTrainer", "rloo": "RLOOTrainer"}
JUDGE_KEYS = ("judge_model", "judge_backend", "judge_base_url", "judge_ensemble", "constitution", "calibration",
              "min_agreement", "strict")


class RlSettings(Settings):
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="rl: TRL's GRPOTrainer or RLOOTrainer.")
    reward: Literal["model", "judge"] = Field("model", description="rl: a trained reward model or the AI judge.")
    reward_model: str | None = Field(None, description="rl: folder of a `cai train reward` output.")
    judge_model: str | None = Field(None, description="rl: the judge model (default: the starting model).")
    judge_backend: str = Field("hf", description="rl: engine of the judge; hf runs it in the training process.")
    judge_base_url: str | None = Field(None, description="rl: server URL(s) for judge_backend openai.")
    judge_ensemble: int = Field(1, ge=1, description="rl: comparison questions averaged per completion.")
    constitution: str | None = Field(
        None, description="rl: the constitution whose comparisons the judge asks; default: the run's own "
        "(run.yaml snapshot) for a run folder, else the one the data's provenance columns name, else `default`.")
    # The judge's calibration, as `cai judge` has it (cai/judge/settings.py), before any training step.
    calibration: str | None = Field(
        None, description="rl: labelled pairs the reward judge is calibrated on before training: a JSONL file (rows "
        "as in `cai judge --pairs` plus label a|b), none (not measured; the reward is the raw p), or unset for the "
        "bundled hard set. The fit also gives the temperature of the reward (cai/train/reward_calibration.py).")
    min_agreement: float = Field(MIN_AGREEMENT, ge=0.0, le=1.0, description="rl: calibration agreement below which "
                                 "the reward judge is reported as close to chance.")
    strict: bool = Field(False, description="rl: exit 1 before training when the reward judge's calibration is below "
                         "min_agreement.")

    def recorded(self) -> dict:
        # Only the reward source in use: a judge run records no reward model, and the reverse.
        drop = {"reward_model"} if self.reward == "judge" else set(JUDGE_KEYS)
        return {k: v for k, v in self.model_dump().items() if k not in drop}


def _reward_model(job: Job):
    """(model, tokenizer) of the reward model folder; TRL scores prompt+completion with them."""
    import json

    from transformers import AutoModelForSequenceClassification

    from cai.models import resolve

    if not job.cai.reward_model:
        raise UsageError("rl with --reward model needs --reward-model DIR (a `cai train reward` output), "
                         "or use --reward judge")
    folder = resolve(job.cai.reward_model, merge_adapters=False)
    cfg = folder / "config.json"
    if cfg.exists() and not any(a.endswith("ForSequenceClassification")
                                for a in json.loads(cfg.read_text()).get("architectures") or []):
        raise UsageError(f"--reward-model {folder}: not a sequence-classification (reward) model; "
                         "train one with `cai train reward`")
    tok = load_tokenizer(folder)
    model = load_full(folder, AutoModelForSequenceClassification, num_labels=1, dtype=job.dtype())
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


def judge_constitution(job: Job):
    """(constitution, how it was chosen) for --reward judge, by the judge's one rule
    (cai.judge.choose_constitution): `--constitution`, else a run folder's run.yaml snapshot, else
    the one the data's provenance columns name when its sha256 matches, else the bundled default."""
    from cai.judge import choose_constitution

    chosen = choose_constitution(job.cai.constitution,
                                 run_dir=job.data.path if job.data.kind == "run folder" else None,
                                 data_name=job.data.constitution_name, data_sha256=job.data.constitution_sha256,
                                 log=lambda s: job.log(f"rl: {s}"))
    return chosen.constitution, chosen.how


def _judge_reward(job: Job, backend=None):
    """A TRL reward function: the judge's P(completion beats the row's reference answer), calibrated
    (cai/train/reward_calibration.py). The judge is measured here, before the trainer exists: below
    the floor with `strict` nothing trains. `backend`: a judge engine already started (tests)."""
    from pydantic import ValidationError

    from cai.judge import JudgeSettings, PairInput, build_judge
    from cai.records import record_id
    from cai.train.reward_calibration import calibrate_reward

    if any(r.get("reference") is None for r in job.rows):
        raise UsageError("--reward judge compares each completion with the prompt's reference answer; "
                         "use preference rows (or SFT rows) rather than bare prompts")
    job.cai.judge_model = job.cai.judge_model or job.model  # recorded in the card as the judge actually used
    # No ties in a reward: the judge's probability is the reward as it is.
    try:
        settings = JudgeSettings(model=job.cai.judge_model, backend=job.cai.judge_backend,
                                 # a server URL means something to the openai engine only
                                 base_url=job.cai.judge_base_url if job.cai.judge_backend == "openai" else None,
                                 ensemble=job.cai.judge_ensemble,
                                 constitution=job.cai.constitution, threshold=0.0, seed=job.args.seed)
    except ValidationError as exc:
        raise UsageError("--reward judge: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                         for e in exc.errors())) from None
    constitution, job.extra["judge_constitution"] = judge_constitution(job)
    ai_judge = build_judge(settings, constitution, backend=backend)
    cal, reward_map = calibrate_reward(ai_judge, job.cai.calibration, min_agreement=job.cai.min_agreement,
                                       strict=job.cai.strict, log=job.log)
    job.extra["judge_calibration"] = {k: v for k, v in cal.items() if k != "reused"}
    job.extra["reward_calibration"] = reward_map.model_dump()

    def judge(prompts, completions, reference, **_):
        items = []
        for prompt, completion, ref in zip(prompts, completions, reference, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            # Keyed by prompt and reference only, so every completion of a group faces the same question.
            items.append(PairInput(key=record_id(prompt, ref), prompt=prompt, a=text, b=ref))
        return [reward_map(v.p_a) for v in ai_judge.compare(items)]

    return judge


def build(job: Job):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    import trl

    if job.cai.reward == "judge":
        funcs, procs = _judge_reward(job), None
        data = job.rows
    else:
        funcs, procs = _reward_model(job)
        data = [{"prompt": r["prompt"]} for r in job.rows]
    cls = getattr(trl, TRAINERS[job.cai.algorithm])
    return cls(
        model=model_arg(job.model_dir, AutoModelForCausalLM, job.args),
        reward_funcs=funcs,
        reward_processing_classes=procs,
        args=job.args,
        train_dataset=Dataset.from_list(data),
        processing_class=job.tokenizer,
        peft_config=job.peft_config(STAGE.task),
    )


def reward_source(settings: RlSettings, metrics: dict) -> str:
    if settings.reward == "judge":
        constitution = metrics.get("judge_constitution") or settings.constitution or "default"
        return (f"AI judge `{settings.judge_model}` ({settings.judge_backend}), P(completion beats the "
                f"reference answer), constitution {constitution}, ensemble {settings.judge_ensemble}, both orders")
    return f"reward model `{settings.reward_model}`"


def card_rows(settings: RlSettings, metrics: dict) -> list[tuple[str, str]]:
    from cai.train.card import calibration_cell
    from cai.train.reward_calibration import RewardMap

    rows = [("reward", reward_source(settings, metrics))]
    if settings.reward == "judge" and metrics.get("judge_calibration"):
        rows.append(("reward judge calibration", calibration_cell(metrics["judge_calibration"])))
    if settings.reward == "judge" and metrics.get("reward_calibration"):
        rows.append(("reward calibration", RewardMap.model_validate(metrics["reward_calibration"]).describe()))
    return rows


def check(recipe) -> None:
    """A calibration file that is missing or malformed is exit 2 before any model loads."""
    cai = recipe.cai
    if cai.reward == "judge" and cai.calibration not in (None, "none", "default"):
        from cai.judge.calibration import resolve_source
        from cai.judge.pairfile import read_labelled_pairs

        read_labelled_pairs(resolve_source(cai.calibration))


STAGE = Stage(
    name="rl",
    help="Online RL (GRPO or RLOO) on prompts, rewarded by a reward model or the AI judge.",
    data="dpo",
    fallback="sft",  # a run not judged yet still has prompts and revised answers
    data_help="prompts (any of the rows above; the judge reward compares with each prompt's un-revised answer)",
    trainer="GRPOTrainer",
    trainer_for=lambda settings: TRAINERS[settings.algorithm],
    rows=prompt_rows,
    build=build,
    settings=RlSettings,
    options=(
        click.option("--algorithm", type=click.Choice(list(TRAINERS)), default=None, help="TRL trainer [default: grpo]."),
        click.option("--reward", type=click.Choice(["model", "judge"]), default=None, help="Reward source [default: model]."),
        click.option("--reward-model", default=None, help="A `cai train reward` output folder (with --reward model)."),
        click.option("--judge-model", default=None, help="Judge model for --reward judge [default: the starting model]."),
        click.option("--judge-backend", type=click.Choice(NAMES), default=None,
                     help="Judge engine [default: hf, in process]."),
        click.option("--judge-base-url", default=None, help="Server URL(s) for --judge-backend openai."),
        click.option("--constitution", default=None,
                     help="Constitution whose comparison questions the judge asks [default: default]."),
        click.option("--calibration", default=None, metavar="FILE|none",
                     help="Labelled pairs ({id, prompt, response_a, response_b, label: a|b}) the reward judge is "
                          "calibrated on before training, with its own settings; the fit sets the reward's "
                          "temperature [default: the bundled hard set, plus the easy tier]."),
        click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
                     help=f"Calibration agreement below which the judge is called close to chance [default: {MIN_AGREEMENT}]."),
        click.option("--strict", is_flag=True, default=None,
                     help="Exit 1 before training anything when the judge is below --min-agreement."),
        click.option("--num-generations", type=click.IntRange(2), default=None, help="Completions sampled per prompt (the group)."),
        click.option("--max-completion-length", type=click.IntRange(1), default=None, help="Token limit of each completion."),
    ),
    card_rows=card_rows,
    check=check,
)
