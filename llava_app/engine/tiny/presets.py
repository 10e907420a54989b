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

# Qwen/Qwen2.5-VL-*-Instruct (and Qwen2-VL-*-Instruct): the checkpoints' chat_template.json, as quoted
# byte for byte for Qwen2-VL-2B-Instruct in llama.cpp's tests/test-chat-template.cpp and by fine-tuning
# scripts that copy "the official chat template"; a default system prompt when the first message is not one,
# each picture as <|vision_start|><|image_pad|><|vision_end|> where it stands among the text parts.
QWEN2_5_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
# Qwen/Qwen3-VL-*-Instruct: the checkpoints' chat_template.jinja (5,292 bytes; the same in Qwen's own
# Qwen3-VL-8B-Instruct-GGUF, whose SHA-256 3636d0f0...a489e4 a public test suite pins): no default system
# prompt, tools in the system turn, tool responses as user turns.
QWEN3_VL_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""  # noqa: E501 (the checkpoint's own lines)

# The Qwen-VL checkpoints' added tokens, in id order from 151,646 (their tokenizer.json): special ones, then
# plain ones (tool calls, fill-in-the-middle), then, for Qwen3-VL, tool responses and thinking.
QWEN_VL_SPECIAL = ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                   "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                   "<|video_pad|>")
QWEN2_5_VL_PLAIN = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
QWEN3_VL_PLAIN = QWEN2_5_VL_PLAIN + ("<tool_response>", "</tool_response>", "<think>", "</think>")

# LLaVA-NeXT (llava-v1.6) anyres grids at 336 px; OneVision's anyres_max_9 grids: 1..6 x 1..6 tiles of 384 px.
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
ONEVISION_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]


@dataclass(frozen=True)
class FaithfulSpec:
    """What a faithful tiny model copies from its reference checkpoint."""

    family: str  # llava | llava_next | llava_onevision | qwen2_5_vl | qwen3_vl
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
    # Qwen-VL: pictures at their own size (smart_resize to multiples of patch x merge, between min and max pixels)
    merge_size: int = 0
    min_pixels: int = 0
    max_pixels: int = 0
    plain_tokens: tuple[str, ...] = ()  # added after ``added_tokens``, not special (Qwen's <tool_call>, ...)
    generation: tuple[tuple[str, object], ...] = ()  # the checkpoint's generation_config.json sampling fields


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
# Qwen-VL: config.json, preprocessor_config.json and generation_config.json of Qwen/Qwen2.5-VL-3B-Instruct
# (patch 14, merge 2, 3,136 to 12,845,056 pixels, CLIP's mean and std; repetition_penalty 1.05, top_k 1,
# top_p 0.001, temperature 0.1) and Qwen/Qwen3-VL-2B-Instruct (patch 16, merge 2, 65,536 to 16,777,216
# pixels, mean and std 0.5; top_k 20, top_p 0.8, temperature 0.7); eos <|im_end|> and <|endoftext|>.
QWEN_IDS = (("bos_token_id", 151643), ("pad_token_id", 151643), ("eos_token_id", [151645, 151643]))
FAITHFUL_PRESETS["tiny-faithful-qwen2.5-vl"] = FaithfulSpec(
    "qwen2_5_vl", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2", QWEN2_5_VL_TEMPLATE, "qwen2_5_vl", 0, 14,
    added_tokens=QWEN_VL_SPECIAL, plain_tokens=QWEN2_5_VL_PLAIN, pad_token="<|endoftext|>", vocab_size=151936,
    end_of_turn="<|im_end|>", context_length=128000, merge_size=2, min_pixels=56 * 56, max_pixels=14 * 14 * 4 * 16384,
    generation=QWEN_IDS + (("do_sample", True), ("repetition_penalty", 1.05), ("temperature", 0.1),
                           ("top_k", 1), ("top_p", 0.001)))
FAITHFUL_PRESETS["tiny-faithful-qwen3-vl"] = FaithfulSpec(
    "qwen3_vl", "Qwen/Qwen3-VL-2B-Instruct", "qwen2", QWEN3_VL_TEMPLATE, "qwen3_vl", 0, 16,
    added_tokens=QWEN_VL_SPECIAL, plain_tokens=QWEN3_VL_PLAIN, pad_token="<|endoftext|>", vocab_size=151936,
    end_of_turn="<|im_end|>", context_length=262144, merge_size=2, min_pixels=65536, max_pixels=16777216,
    generation=QWEN_IDS + (("do_sample", True), ("temperature", 0.7), ("top_k", 20), ("top_p", 0.8)))
# The benchmarks' Qwen models: the same with a text model as wide and deep as tiny-faithful-bench's (below).
for _name in ("tiny-faithful-qwen2.5-vl", "tiny-faithful-qwen3-vl"):
    FAITHFUL_PRESETS[f"{_name}-bench"] = FaithfulSpec(
        **{**FAITHFUL_PRESETS[_name].__dict__, "text_hidden": 256, "text_layers": 8, "tie_embeddings": True})
# For the multi-turn benchmark: the interleave checkpoint's tokenizer, template and geometry (729 tokens
# per image) with a text model big enough that prefill costs real time on a CPU.
FAITHFUL_PRESETS["tiny-faithful-bench"] = FaithfulSpec(
    **{**FAITHFUL_PRESETS["tiny-faithful-interleave"].__dict__, "text_hidden": 256, "text_layers": 8,
       "tie_embeddings": True})
# The faithful ones are tiny models too (faithful.py builds them).
TINY_PRESETS.update({name: "faithful" for name in FAITHFUL_PRESETS})
