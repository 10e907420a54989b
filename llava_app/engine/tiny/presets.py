"""The tiny models ``--model`` accepts, and what each copies: the module the engines (``is_tiny``) and the
builders read, importing nothing (``build.py`` and ``faithful.py`` build the models).

``tiny-random-*``: a family's real processor and model code at a few hundred thousand parameters, with a
word-level tokenizer. ``tiny-faithful-*``: a real checkpoint's tokenizer, special tokens, chat template and
image geometry (``FaithfulSpec``), with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The tiny random-weight models --model accepts, and the family each builds (build.py builds them).
TINY_PRESETS = {
    "tiny-random": "llava",
    "tiny-random-llava": "llava",
    "tiny-random-llava-next": "llava_next",
    "tiny-random-llava-onevision": "llava_onevision",
    "tiny-random-bench": "bench",
}


def is_tiny(name: str) -> bool:
    """True for the names that build a tiny random model (its answers are random words)."""
    return name in TINY_PRESETS


# ----- chat templates, as the checkpoints ship them ---------------------------------------------
# llava-hf/llava-1.5-7b-hf and llava-hf/llava-v1.6-vicuna-7b-hf (Vicuna v1 format): transformers'
# tests/models/llava/test_processor_llava.py and tests/models/llava_next/test_processing_llava_next.py
# (prepare_processor_dict), whose test_chat_template checks "USER: <image>\nWhat is shown in this
# image? ASSISTANT:" against both checkpoints. A system message is rendered as bare text.
VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# llava-hf/llava-onevision-qwen2-*-ov-hf (ChatML): transformers'
# src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py (chat_template);
# docs/source/en/model_doc/llava_onevision.md decodes it as "user\n\nWhat is shown...\nassistant\n...".
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}{# Render all video then #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# llava-hf/llava-interleave-qwen-*-hf (ChatML): the checkpoint's chat_template.json as quoted (with only
# the <|im_end|> moved into the generation block) by training collators that cite it, e.g.
# "slightly different from https://huggingface.co/llava-hf/llava-interleave-qwen-0.5b-hf/blob/main/
# chat_template.json"; transformers' docs/source/en/model_doc/llava.md gives the same shape
# ("<|im_start|>user <image>\n<prompt1><|im_end|><|im_start|>assistant ...").
INTERLEAVE_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}"
    "{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# LLaVA-NeXT (llava-v1.6) anyres grids at 336 px; OneVision's anyres_max_9 grids: 1..6 x 1..6 tiles of 384 px.
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
ONEVISION_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]


@dataclass(frozen=True)
class FaithfulSpec:
    """What a faithful tiny model copies from its reference checkpoint."""

    family: str  # llava | llava_next | llava_onevision
    reference: str
    vocab: str  # real_tokenizers kind: qwen2 | llama-spm
    template: str
    vision: str  # clip_vision_model | siglip_vision_model
    image_size: int
    patch_size: int
    added_tokens: tuple[str, ...] = ("<image>",)
    pad_token: str = "<unk>"
    vocab_size: int = 32064  # the checkpoint's embedding rows (padded past the tokenizer)
    end_of_turn: str = "</s>"
    select_strategy: str = "default"
    feature_layer: int = -2
    pinpoints: list = field(default_factory=list)
    text_hidden: int = 32
    text_layers: int = 2
    context_length: int = 4096  # the text model's window: Vicuna v1.5 4,096; Qwen2/Qwen1.5 32,768
    tie_embeddings: bool = False  # the bench model shares them: Qwen2's 152k-row table dominates its size


FAITHFUL_PRESETS = {
    "tiny-faithful-llava": FaithfulSpec(
        "llava", "llava-hf/llava-1.5-7b-hf", "llama-spm", VICUNA_TEMPLATE, "clip_vision_model", 336, 14,
        added_tokens=("<image>", "<pad>"), pad_token="<pad>"),
    "tiny-faithful-llava-next": FaithfulSpec(
        "llava_next", "llava-hf/llava-v1.6-vicuna-7b-hf", "llama-spm", VICUNA_TEMPLATE, "clip_vision_model", 336, 14,
        pinpoints=NEXT_PINPOINTS),
    "tiny-faithful-llava-onevision": FaithfulSpec(
        "llava_onevision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "qwen2", ONEVISION_TEMPLATE,
        "siglip_vision_model", 384, 14, added_tokens=("<image>", "<video>"), pad_token="<|endoftext|>",
        vocab_size=152000, end_of_turn="<|im_end|>", select_strategy="full", feature_layer=-1,
        pinpoints=ONEVISION_PINPOINTS, context_length=32768),
    "tiny-faithful-interleave": FaithfulSpec(
        "llava", "llava-hf/llava-interleave-qwen-0.5b-hf", "qwen2", INTERLEAVE_TEMPLATE, "siglip_vision_model",
        384, 14, pad_token="<|endoftext|>", vocab_size=152000, end_of_turn="<|im_end|>", select_strategy="full",
        feature_layer=-1, context_length=32768),
}
# For the multi-turn benchmark: the interleave checkpoint's tokenizer, template and geometry (729 tokens
# per image) with a text model big enough that prefill costs real time on a CPU.
FAITHFUL_PRESETS["tiny-faithful-bench"] = FaithfulSpec(
    **{**FAITHFUL_PRESETS["tiny-faithful-interleave"].__dict__, "text_hidden": 256, "text_layers": 8,
       "tie_embeddings": True})
# The faithful ones are tiny models too (faithful.py builds them).
TINY_PRESETS.update({name: "faithful" for name in FAITHFUL_PRESETS})
