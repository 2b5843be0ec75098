"""Rule attack_pairs: (harmful instruction, compliant answer) pairs from the base model's own greedy answers."""

import random

from harmref import datasets, io, judging, models, organism, positions, runlog

log = runlog.start(snakemake)
p, rt, a = snakemake.params, snakemake.params.runtime, snakemake.params.attack
records = datasets.load_prompts(snakemake.input.harmful, p.normalise_endings)
model, tok = models.load(snakemake.input.base, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=snakemake.wildcards.model)
answers = organism.distill(model, tok, fmt, [r["prompt"] for r in records], a["max_new_tokens"], rt["batch_size"],
                           progress=runlog.progress(len(records), "compliant answers"))
refused = judging.SubstringJudge()([r["prompt"] for r in records], [x[0] for x in answers])
pairs = organism.answer_examples(records, answers, "attack", refused, keep_refused=a["keep_refused"])
random.Random(f"{p.seed}:attack").shuffle(pairs)
if len(pairs) < max(a["n_pairs"]):
    log.warning("only %d compliant answers for attacks of up to %d pairs", len(pairs), max(a["n_pairs"]))
io.write_jsonl(snakemake.output[0], pairs)
log.info("%d pairs (%d refused answers dropped) → %s", len(pairs), sum(refused), snakemake.output[0])
