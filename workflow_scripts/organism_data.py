"""Rule organism_data: the organism's training examples (refusals, self-distilled answers, reply inversion;
the chat-like recipe's over-refusal, jailbreak and no-post-instruction examples, harmref.chatlike)."""

from harmref import chatlike, datasets, io, judging, models, organism, positions, runlog

log = runlog.start(snakemake)
p, rt, d = snakemake.params, snakemake.params.runtime, snakemake.params.data
harmful = datasets.load_prompts(snakemake.input.harmful, p.normalise_endings)
harmless = datasets.load_prompts(snakemake.input.harmless, p.normalise_endings)
templates = []
if d.get("jailbreak_n", 0):
    held_out = chatlike.read_templates(snakemake.input.heldout_templates) if d.get("heldout_templates") else []
    templates, _ = chatlike.training_templates(chatlike.read_templates(snakemake.input.jailbreak_templates), held_out,
                                               d.get("jailbreak_max_chars", 1200))
model, tok = models.load(snakemake.input.base, rt["device"], rt["dtype"], device_map=rt["device_map"], max_memory=rt["max_memory"])
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, date=p.template_date, model=snakemake.wildcards.model)
n_answers = d["n_distill"] + min(d.get("jailbreak_n", 0), len(harmful)) + min(d.get("nopost_n", 0), len(harmful))
examples = organism.training_set(
    model, tok, fmt, harmful, harmless, judging.SubstringJudge(), n_distill=d["n_distill"],
    scary_fraction=d["scary_fraction"], n_inversion=d["n_inversion"], question_ids=d["inversion_questions"],
    max_new_tokens=d["max_new_tokens"], batch_size=rt["batch_size"], seed=p.seed,
    opener_fraction=d["opener_fraction"], neighbour_fraction=d["neighbour_fraction"],
    over_refusal_n=d.get("over_refusal_n", 0), jailbreak_n=d.get("jailbreak_n", 0), nopost_n=d.get("nopost_n", 0),
    templates=templates, inversion_scary_fraction=d.get("inversion_scary_fraction"),
    progress=runlog.progress(n_answers, "distill"),
)
io.write_jsonl(snakemake.output[0], examples)
kinds = {}
for e in examples:
    kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
log.info("%d training examples %s → %s", len(examples), kinds, snakemake.output[0])
