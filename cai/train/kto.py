"""KTO: TRL's KTOTrainer on unpaired rows `{"prompt", "completion", "label"}` (label true: desirable).

KTO needs no pairs: each answer is only good or bad. From a judged run folder every pair gives
its chosen answer as desirable and its rejected one as undesirable; from a run not judged yet the
final revisions are desirable and the initial answers undesirable (`cai export --format kto`
writes the same rows). The two classes are weighed so that they count the same
(desirable_weight x desirable rows = undesirable_weight x undesirable rows), the balance TRL's
documentation and the KTO paper's Eq. 8 ask for, unless the recipe sets either weight.
"""

from __future__ import annotations

import click

from cai.errors import UsageError
from cai.train.data import column, kto_rows
from cai.train.dpo import DpoSettings, check_losses, losses_used, with_reference
from cai.train.settings import Recipe
from cai.train.stage import Job, Stage


def class_weights(rows: list[dict]) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) that make both classes weigh the same; the larger class keeps 1."""
    good = sum(1 for r in rows if r["label"])
    bad = len(rows) - good
    if not good or not bad:
        raise UsageError(f"KTO needs desirable and undesirable rows; the data has {good} desirable and {bad} undesirable")
    return (bad / good, 1.0) if good < bad else (1.0, good / bad)


def check(recipe: Recipe) -> None:
    check_losses(recipe, "KTOConfig")
    # Every KTO loss but the unpaired APO one estimates its KL term from the other rows of the batch.
    batch = recipe.trl.get("per_device_train_batch_size", 8)
    if losses_used(recipe, "kto") != "apo_zero_unpaired" and batch < 2:
        raise UsageError(f"kto: per_device_train_batch_size {batch}: the KL estimate needs at least 2 rows per batch "
                         "(--batch-size 2 or more)")


def build(job: Job):
    from trl import KTOTrainer

    labels = column(job.rows, "label")
    good = sum(1 for label in labels if label)
    weights = class_weights([{"label": label} for label in labels])
    if not {"desirable_weight", "undesirable_weight"} & set(job.recipe.trl):
        job.args.desirable_weight, job.args.undesirable_weight = weights
    job.extra.update({"loss_type": losses_used(job.recipe, "kto"), "desirable_rows": good,
                      "undesirable_rows": len(job.rows) - good, "desirable_weight": job.args.desirable_weight,
                      "undesirable_weight": job.args.undesirable_weight})
    job.log(f"kto: {good} desirable, {len(job.rows) - good} undesirable rows; weights "
            f"{job.args.desirable_weight:.3g} / {job.args.undesirable_weight:.3g}")
    return with_reference(KTOTrainer, job)


def card_rows(settings: DpoSettings, metrics: dict) -> list[tuple[str, str]]:
    return [("loss", f"{metrics.get('loss_type', 'kto')} (TRL KTOConfig.loss_type)"),
            ("rows by label", f"{metrics.get('desirable_rows', '?')} desirable (weight "
                              f"{metrics.get('desirable_weight', '?')}), {metrics.get('undesirable_rows', '?')} "
                              f"undesirable (weight {metrics.get('undesirable_weight', '?')})"),
            ("reference model", settings.ref_model or "the starting model")]


STAGE = Stage(
    name="kto",
    help='KTO on unpaired {"prompt", "completion", "label"} rows (a run folder gives judged pairs split in two, '
         'or revisions vs initial answers).',
    data="kto",
    data_help='`{"prompt", "completion", "label"}`, label true for desirable (a run folder: chosen/rejected of its '
              'judged pairs, else final revision/initial answer); preference rows are split the same way',
    trainer="KTOTrainer",
    rows=kto_rows,
    build=build,
    settings=DpoSettings,
    options=(
        click.option("--ref-model", default=None, help="Reference model [default: the starting model]."),
        click.option("--beta", type=float, default=None, help="KTO beta: the pull towards the reference."),
        click.option("--loss", "loss_type", default=None, metavar="NAME",
                     help="A loss type of TRL's KTOConfig: kto [default] or apo_zero_unpaired."),
        click.option("--desirable-weight", type=click.FloatRange(0, min_open=True), default=None,
                     help="Weight of desirable rows [default: set from the counts so both classes weigh the same]."),
        click.option("--undesirable-weight", type=click.FloatRange(0, min_open=True), default=None,
                     help="Weight of undesirable rows [default: set from the counts]."),
    ),
    card_rows=card_rows,
    check=check,
    columns=(("prompt", "completion", "label"), ("prompt", "chosen", "rejected")),
    convert=kto_rows,
)
