# Prompt sets: raw files in data/ → results/data/{dataset}.jsonl (id, prompt, label, source, category).


rule build_dataset:
    """One prompt set from its raw files under data_root: {id, prompt, label, source, category}, a
    seeded sample, disjoint from the sets it excludes."""
    input:
        files=get_dataset_files,
        exclude=get_dataset_excludes,
    output:
        "results/data/{dataset}.jsonl",
    params:
        spec=lambda wc: DATASETS[wc.dataset],
        root=config["data_root"],
        seed=config["seed"],
    log:
        "logs/build_dataset/{dataset}.log",
    wildcard_constraints:
        dataset="|".join(map(re.escape, BUILT_SETS)) or "NONE",  # the nanoGCG sets come from rule gcg_attack
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/build_dataset.py"


rule data_manifest:
    """Seed, sample size and source sha256 of every buildable prompt set, each rebuilt to check that
    it reproduces."""
    input:
        expand(rules.build_dataset.output[0], dataset=manifest_sets()),
    output:
        "results/data/manifest.json",
    params:
        names=manifest_sets(),
        specs=lambda wc: {d: DATASETS[d] for d in manifest_sets()},
        root=config["data_root"],
        seed=config["seed"],
    log:
        "logs/data_manifest.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/data_manifest.py"


FINAL_TARGETS.append("results/data/manifest.json")
