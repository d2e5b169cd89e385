"""Visual Genome VG150 data: loader (visual_genome), mapper and transforms, samplers, DataLoaders (build),
file writers (vg_writer) and the synthetic VG-format world (synthetic)."""
