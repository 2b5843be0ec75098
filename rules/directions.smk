# Directions and geometry: centroids, harmfulness / refusal directions, cosines, clustering, beliefs.


def get_direction_inputs(wildcards):
    m, d = wildcards.model, config["directions"]
    out = {}
    for role in ("harmful", "harmless"):
        out[f"{role}_hidden"] = f"results/{m}/hidden/{d[role]}.safetensors"
        out[f"{role}_gen"] = f"results/{m}/generations/chat/{d[role]}.jsonl"
    return out


rule directions:
    input:
        unpack(get_direction_inputs),
    output:
        "results/{model}/directions/directions.safetensors",
        "results/{model}/directions/directions.json",
    params:
        mode=config["directions"]["harmful_centroid"],
        min_group=config["directions"]["min_group"],
    log:
        "logs/directions/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/directions.py"


def get_geometry_inputs(wildcards):
    m, d = wildcards.model, config["directions"]
    out = {
        "directions": f"results/{m}/directions/directions.safetensors",
        "hidden": [f"results/{m}/hidden/{s}.safetensors" for s in d["eval_sets"]],
        "gens": [f"results/{m}/generations/chat/{s}.jsonl" for s in d["eval_sets"]],
    }
    if d.get("category_set"):
        out["category"] = f"results/{m}/hidden/{d['category_set']}.safetensors"
    return out


GEOMETRY_TABLES = ["cosine_by_layer", "clustering", "clustering_positions", "beliefs", "harmfulness_accuracy", "category_directions"]
GEOMETRY_FIGURES = ["fig2_clustering", "cosine_by_layer", "fig14_positions", "harmfulness_accuracy"]


rule geometry:
    input:
        unpack(get_geometry_inputs),
    output:
        tables=expand("results/{{model}}/tables/{name}.{ext}", name=GEOMETRY_TABLES, ext=("csv", "md")),
        figures=expand("results/{{model}}/figures/{name}.png", name=GEOMETRY_FIGURES),
    params:
        eval_sets=config["directions"]["eval_sets"],
        middle_layers=config["directions"]["middle_layers"],
    log:
        "logs/geometry/{model}.log",
    localrule: True
    conda:
        "../envs/harmref.yaml"
    script:
        "../workflow_scripts/geometry.py"


FINAL_TARGETS.extend(expand(rules.geometry.output, model=ANALYSIS_MODELS))
