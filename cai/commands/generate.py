"""`cai generate`: answers, then critique → revision rounds, into a resumable run folder."""

from __future__ import annotations

import click

from cai.commands.merge import shard_option
from cai.commands.options import backend_choice, chunk_size_option, echo_lines, engine_options


@click.command()
@click.option("--constitution", default=None, help="Bundled constitution name or YAML path [default: default].")
@click.option("--prompts", default=None, help="Prompt set: .jsonl, .txt, .csv, .parquet or a datasets folder [default: bundled red-team set].")
@click.option("--prompt-field", default=None, help="Column/field holding the prompt [default: prompt].")
@click.option("--on-bad-row", type=click.Choice(["skip", "fail"]), default=None, help="What a bad input row does [default: fail].")
@click.option("--model", default=None, help="Model name or local folder [default: smollm2-135m].")
@engine_options
@click.option("--reviser-model", default=None, help="Model that writes the critiques and revisions (a stronger critic) [default: --model].")
@click.option("--reviser-backend", type=backend_choice(), default=None, help="Engine of the reviser [default: the policy's].")
@click.option("--reviser-base-url", default=None, help="openai reviser: server URL(s), comma-separated.")
@click.option("--rounds", type=click.IntRange(0), default=None, help="Critique → revision rounds [default: 2].")
@click.option("--samples", type=click.IntRange(1), default=None, help="Answers per prompt, in one request [default: 1].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N prompts.")
@click.option("--seed", type=int, default=None, help="Sampling seed [default: 0].")
@click.option("--run-dir", default=None, help="Run folder [default: runs/<constitution>-<model>].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML recipe with the same settings; flags override it.")
@click.option("--templates", default=None, help="Folder of Jinja2 templates overriding the bundled ones.")
@chunk_size_option("Prompts in flight at once; auto sizes it from the engine: vLLM's KV capacity over the tokens "
                   "a prompt's conversation holds at its largest, openai's --concurrency, hf's batch size "
                   "[default: auto].")
@click.option("--few-shot", type=click.IntRange(0), default=None, help="At most N constitution examples prepended [default: 2].")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Token limit of answers and revisions.")
@click.option("--dedup", type=click.Choice(["exact", "near", "none"]), default=None,
              help="Leave out duplicate prompts before generating: exact (same text up to case, spacing and Unicode "
                   "form), near (also nearly the same: MinHash Jaccard >= 0.8 of 3-token shingles), none "
                   "[default: exact].")
@click.option("--decontaminate", "decontaminate", multiple=True, metavar="FILE",
              help="A prompt set (any format --prompts takes, e.g. an eval set); training prompts sharing a 13-token "
                   "run with one of its prompts, or most of a short one, are left out. Repeatable.")
@shard_option("Only shard I of N (counted from 0): the prompts whose key hashes to I, after dedup and "
              "decontamination (which see the whole set, so all N shards agree). Run N jobs, each with its own "
              "--run-dir, then `cai merge`.")
@click.option("--force-new", is_flag=True, default=None, help="Start the run folder over even if it holds another setup.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def generate(progress, max_tokens, config_file, decontaminate, shard, **flags) -> None:
    """Generate answers and critique → revision rounds under a constitution."""
    from cai.config import GenerateConfig, load_config
    from cai.generate import run_generate

    flags.update(decontaminate=list(decontaminate) or None, shard=str(shard) if shard else None)
    cfg = load_config(GenerateConfig, config_file, flags)
    if max_tokens:
        cfg = cfg.model_copy(update={"answer": cfg.answer.model_copy(update={"max_tokens": max_tokens}),
                                     "revision": cfg.revision.model_copy(update={"max_tokens": max_tokens})})
    summary = run_generate(cfg, progress=progress)
    echo_lines("generate: done", summary.lines())
    if summary.failed:
        raise SystemExit(1)
