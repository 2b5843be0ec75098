# Directions and geometry: centroids, harmfulness / refusal directions, cosines, clustering, beliefs.


rule directions:
    """The four centroids (harmful / harmless at t_inst, refused / accepted at t_post-inst) and the
    harmfulness and refusal directions."""
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


GEOMETRY_TABLES = ["cosine_by_layer", "clustering", "clustering_positions", "beliefs", "harmfulness_accuracy", "category_directions"]
GEOMETRY_FIGURES = ["fig2_clustering", "cosine_by_layer", "fig14_positions", "harmfulness_accuracy"]


rule geometry:
    """The §3 measurements: cosines by layer, clustering scores (Fig 2, App. F Fig 14), Δharmful /
    Δrefuse (Fig 3 data), centroid-rule accuracy, CatQA category directions."""
    input:
        unpack(get_geometry_inputs),
    output:
        tables=expand("results/{{model}}/tables/{name}.{ext}", name=GEOMETRY_TABLES, ext=("csv", "md")),
        figures=[
            report(f"results/{{model}}/figures/{name}.png", caption=f"../report/{name}.rst", category=figure_section(name), subcategory="{model}")
            for name in GEOMETRY_FIGURES
        ],
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
