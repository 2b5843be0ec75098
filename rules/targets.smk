# One named target per table and figure of the paper (../shared/research/paper.md §5): `snakemake table1`,
# `snakemake fig2`, … builds that artefact (its figure and the table of its numbers) for every analysed
# model, and only what it needs. Included last: the inputs are other rules' outputs (rules.X.output).
# `snakemake --list-rules` describes each. Fig 3 has no figure of its own: its data is tables/beliefs.


rule table1:
    """Paper Table 1: AdvBench refusal with vs without the post-instruction tokens (tables/table1_post_instruction)."""
    input:
        outputs_named("refusal_tables", "table1_post_instruction.csv", "table1_post_instruction.md"),
    localrule: True


rule fig2:
    """Paper Fig 2: clustering score s^l by layer at t_inst and t_post-inst (figures/fig2_clustering, tables/clustering)."""
    input:
        outputs_named("geometry", "fig2_clustering.png", "clustering.csv", "clustering.md"),
    localrule: True


rule fig3:
    """Paper Fig 3: Δharmful and Δrefuse of every held-out prompt by behaviour group (tables/beliefs; no figure)."""
    input:
        outputs_named("geometry", "beliefs.csv", "beliefs.md"),
    localrule: True


rule fig4:
    """Paper Fig 4: refusal of accepted harmless prompts steered by each direction at each layer (figures and tables fig4_steering_refusal)."""
    input:
        outputs_named("steering_report", "fig4_steering_refusal.png", "fig4_steering_refusal.csv", "fig4_steering_refusal.md"),
    localrule: True


rule fig5:
    """Paper Fig 5: reply inversion under steering, "No" % per direction and layer (figures and tables fig5_reply_inversion)."""
    input:
        outputs_named("steering_report", "fig5_reply_inversion.png", "fig5_reply_inversion.csv", "fig5_reply_inversion.md"),
    localrule: True


rule fig6:
    """Paper Fig 6: jailbreaks in the Δharmful / Δrefuse plane (figures/fig6_jailbreaks, tables/fig6_group_means)."""
    input:
        outputs_named("fig6_jailbreaks", "fig6_jailbreaks.png", "fig6_group_means.csv", "fig6_group_means.md"),
    localrule: True


rule fig7:
    """Paper Fig 7: the fine-tuning attack, Δharmful by layer after N attack pairs (figures/fig7_finetune_attack, tables/finetune_attack*)."""
    input:
        expand(rules.finetune_attack.output, model=ATTACK_SOURCES),
    localrule: True


rule fig14:
    """Paper App. F Fig 14: mean s over the middle layers at each position t_inst-2 … t_post-inst (figures/fig14_positions, tables/clustering_positions)."""
    input:
        outputs_named("geometry", "fig14_positions.png", "clustering_positions.csv", "clustering_positions.md"),
    localrule: True


rule table3:
    """Paper Table 3: Latent Guard vs the guard baselines, accuracy % per test set (tables/table3_guards)."""
    input:
        outputs_named("table3_guards", "table3_guards.csv", "table3_guards.md"),
    localrule: True
