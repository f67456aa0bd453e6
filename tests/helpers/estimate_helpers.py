"""Tiny configs of several architectures, shared by the estimate tests."""

TINY = {
    "llama": {"model_type": "llama", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 88,
              "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
              "max_position_embeddings": 128},
    "qwen2": {"model_type": "qwen2", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 72,
              "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
              "max_position_embeddings": 128, "tie_word_embeddings": True},
    "mistral": {"model_type": "mistral", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 96,
                "num_attention_heads": 4, "num_key_value_heads": 1, "num_hidden_layers": 2,
                "max_position_embeddings": 128},
    "gpt2": {"model_type": "gpt2", "vocab_size": 128, "n_embd": 32, "n_layer": 2, "n_head": 4,
             "n_positions": 128},
    "phi": {"model_type": "phi", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
            "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 128},
    "phi3": {"model_type": "phi3", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
             "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 2,
             "max_position_embeddings": 128, "pad_token_id": 0},
}


def build(arch: str, **overrides):
    """A real (CPU, random-initialised) model of the tiny config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = {**TINY[arch], **overrides}
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(**raw)), raw
