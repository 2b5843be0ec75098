"""Rule attack_pairs: (harmful instruction, compliant answer) pairs for the fine-tuning attack of one analysed model.

organism.attack.pairs_from: `base` — the base model's own greedy answers (a tuned organism: its untuned base
complies); `steered` — the model's own answers steered with the reverse refusal direction (the paper, §5.2);
`self` — the model's own unsteered answers. Refused answers (substring judge) are dropped.
"""

import random

from harmref import attack, datasets, io, judging, models, organism, positions, runlog

log = runlog.start(snakemake)
p, rt, a = snakemake.params, snakemake.params.runtime, snakemake.params.attack
records = datasets.load_prompts(snakemake.input.harmful, p.normalise_endings)
model, tok = models.load(snakemake.input.source, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=p.source)
prompts = [r["prompt"] for r in records]
progress = runlog.progress(len(records), "compliant answers")
if p.pairs_from == "steered":
    from harmref import geometry

    refusal = io.read_tensors(snakemake.input.directions)["refusal"]
    layer = a["steer"]["layer"]
    if layer is None:  # the first of the middle layers (directions.middle_layers)
        layer = geometry.middle_layers(refusal.shape[0], p.middle_layers)[0]
    log.info("answers of %s steered with −%g × the refusal direction at layer %d%s", p.source, a["steer"]["coefficient"],
             layer, " (every generated token too)" if a["steer"]["every_step"] else " (prompt tokens)")
    answers = attack.steered_answers(model, tok, fmt, prompts, refusal, layer, a["steer"]["coefficient"],
                                     a["steer"]["every_step"], a["max_new_tokens"], rt["batch_size"], progress=progress)
else:
    answers = organism.distill(model, tok, fmt, prompts, a["max_new_tokens"], rt["batch_size"], progress=progress)
refused = judging.SubstringJudge()(prompts, [x[0] for x in answers])
pairs = organism.answer_examples(records, answers, "attack", refused, keep_refused=a["keep_refused"])
random.Random(f"{p.seed}:attack").shuffle(pairs)
io.write_jsonl(snakemake.output[0], pairs)
log.info("%d pairs from %s (%s; %d refused answers dropped) → %s", len(pairs), p.source, p.pairs_from, sum(refused),
         snakemake.output[0])
