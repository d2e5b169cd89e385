"""Scene-graph data: the dataset catalog (catalog) over the VG150 (visual_genome), COCO-relations (coco_relations)
and PSG (psg) loaders, converters between formats (convert), mapper and transforms, samplers, DataLoaders (build),
file writers (vg_writer) and the synthetic VG-format world (synthetic)."""
