"""The reference model: transformers' native DeepseekOcr2 loading an official-layout directory
(see ../shared/README.md for the config mapping, checked to reproduce the official tensors)."""
import json
import pathlib


def reference_config(model_dir: pathlib.Path):
    from transformers import DeepseekOcr2Config
    cfg = json.loads((model_dir / "config.json").read_text())
    vision = cfg.get("dsocr_vision", {})
    sam = {"width": 768, "layers": 12, "heads": 12, "mlp_dim": 3072, "window_size": 14,
           "global_attn_indexes": [2, 5, 8, 11], "out_chans": 256, "downsample_channels": [512, 896]}
    sam.update(vision.get("sam", {}))
    enc = {"hidden_size": 896, "layers": 24, "heads": 14, "kv_heads": 2, "intermediate_size": 4864,
           "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}
    enc.update(vision.get("encoder", {}))
    keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "moe_intermediate_size",
            "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "n_group",
            "topk_group", "topk_method", "max_position_embeddings", "bos_token_id", "eos_token_id"]
    text = {k: cfg[k] for k in keys}
    layers, dense = cfg["num_hidden_layers"], cfg["first_k_dense_replace"]
    text.update(rms_norm_eps=1e-6, routed_scaling_factor=1.0, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                mlp_layer_types=["dense"] * dense + ["sparse"] * (layers - dense))
    return DeepseekOcr2Config(
        vision_config={
            "sam_config": {"hidden_size": sam["width"], "num_hidden_layers": sam["layers"],
                           "num_attention_heads": sam["heads"], "mlp_dim": sam["mlp_dim"],
                           "window_size": sam["window_size"],
                           "global_attn_indexes": sam["global_attn_indexes"],
                           "output_channels": sam["out_chans"],
                           "downsample_channels": sam["downsample_channels"],
                           "layer_norm_eps": 1e-6},
            "encoder_config": {"hidden_size": enc["hidden_size"],
                               "num_hidden_layers": enc["layers"],
                               "num_attention_heads": enc["heads"],
                               "num_key_value_heads": enc["kv_heads"],
                               "intermediate_size": enc["intermediate_size"],
                               "rms_norm_eps": enc["rms_norm_eps"],
                               "rope_parameters": {"rope_type": "default",
                                                   "rope_theta": enc["rope_theta"]},
                               "max_position_embeddings": 131072}},
        text_config=text, image_token_id=128815, tie_word_embeddings=False)


def load_reference(model_dir: pathlib.Path, dtype="float32"):
    """The transformers model and its loading report (missing/unexpected/mismatched keys)."""
    import torch
    from transformers import DeepseekOcr2ForConditionalGeneration
    model, info = DeepseekOcr2ForConditionalGeneration.from_pretrained(
        str(model_dir), config=reference_config(model_dir), dtype=getattr(torch, dtype),
        output_loading_info=True)
    return model.eval(), info
