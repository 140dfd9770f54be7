"""LoRA: peft glue for training, ComfyUI-native files, exact and approximate merges, weight patching."""
from .apply import (
    WeightBackup,
    check_lora_fits,
    check_lora_shapes,
    linear_layers,
    merge_lora_into,
    merged_state_dict,
    unmerge_lora,
)
from .formats import (
    MERGE_STAMP,
    NAMINGS,
    describe,
    from_state_dict,
    load_lora,
    save_lora,
    to_state_dict,
    written_by_merge,
)
from .merge import METHODS, MergeResult, dare_merge, dense_merge_bytes, merge_loras, merged_delta, ties_merge
from .peft_glue import (
    DEFAULT_TARGETS,
    adapter_names,
    add_lora,
    base_state_dict,
    disable_adapter,
    extract_lora,
    fold_adapters,
    load_into_adapter,
    lora_state_dict,
    lora_trainable_parameters,
    remove_lora,
)
from .weights import LoraFactors, LoraWeights

__all__ = [
    "DEFAULT_TARGETS", "MERGE_STAMP", "METHODS", "NAMINGS", "LoraFactors", "LoraWeights", "MergeResult", "WeightBackup",
    "add_lora", "adapter_names", "base_state_dict", "check_lora_fits", "check_lora_shapes", "dare_merge",
    "dense_merge_bytes", "describe",
    "disable_adapter", "extract_lora", "fold_adapters", "from_state_dict", "linear_layers", "load_into_adapter", "load_lora",
    "lora_state_dict", "lora_trainable_parameters", "merge_lora_into", "merge_loras", "merged_delta",
    "merged_state_dict", "remove_lora", "save_lora", "ties_merge", "to_state_dict", "unmerge_lora",
    "written_by_merge",
]
