"""Rule prompt_view: a model's view of one prompt set (normalised text, rendered prompt, token ids, t_inst, t_post-inst)."""

from harmref import datasets, io, models, positions, prompt_view, runlog

log = runlog.start(snakemake)
p, wc = snakemake.params, snakemake.wildcards
records = datasets.load_prompts(snakemake.input.prompts, p.normalise_endings)
tok, context_length = models.load_tokenizer(snakemake.input.model)
fmt = positions.ChatFormat.from_tokenizer(tok, p.system_prompt, post_instruction=wc.template == "chat",
                                         date=p.template_date, model=wc.model)
rows = prompt_view.build(tok, fmt, records)
side = prompt_view.sidecar(fmt, rows, model=wc.model, dataset=wc.dataset, system_prompt=p.system_prompt,
                           normalise_endings=p.normalise_endings, context_length=context_length,
                           source=snakemake.input.prompts)
prompt_view.check_context(rows, side, 0, snakemake.input.prompts)  # a prompt longer than the context fails here
io.write_jsonl(snakemake.output.view, rows)
io.write_json(snakemake.output.sidecar, side)
log.info("%d prompts of %s as %s sees them (%s template, longest %d tokens) → %s", len(rows), wc.dataset, wc.model,
         wc.template, side["max_tokens"], snakemake.output.view)
