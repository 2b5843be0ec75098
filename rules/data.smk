# Prompt sets: raw files in data/ → results/data/{dataset}.jsonl (id, prompt, label, source, category).


rule build_dataset:
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
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/build_dataset.py"
