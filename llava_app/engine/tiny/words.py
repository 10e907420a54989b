"""The word-level tokenizer of the tiny-random models (and of a tiny-faithful one whose real vocabulary is
missing): a few hundred English words, so that random answers stream as readable words.
"""

from __future__ import annotations

_WORDS = """
the a an and or but of to in on at by for with from up down over under near far left right top bottom
is are was were be been has have had do does did can could will would should may might must
image picture photo scene chart diagram receipt table text label number total price item items
red green blue yellow orange purple black white gray brown pink dark light bright color colors
cat dog bird horse cow sheep fish tree trees flower grass sky cloud clouds sun moon star water river
lake sea mountain hill road street car bus truck bike train boat plane house building door window
wall floor roof room kitchen table chair bed sofa lamp book cup plate bowl bottle glass phone screen
man woman person people child children boy girl hand face eye eyes hair shirt hat shoe bag box
one two three four five six seven eight nine ten first second third last many few some all both
big small large little long short tall wide round square circle triangle line lines shape shapes
shows show contains appears looks seems there here this that these those it its they them their
same different similar other another more less most least very quite also only just not no yes
left middle center background foreground side edge corner front back inside outside between above below
sunny cloudy rainy snowy day night morning evening old new clean busy quiet happy calm simple
""".split()

SPECIAL = {
    "pad": "<pad>",
    "unk": "<unk>",
    "bos": "<s>",
    "eos": "<|im_end|>",
    "im_start": "<|im_start|>",
    "image": "<image>",
    "video": "<video>",
}
PUNCT = [".", ",", ":", "?", "!", "'", "(", ")", "-", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

# A ChatML template that renders content parts in order, so each image sits right
# after its label. Written for these tiny models; real checkpoints bring their own.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer():
    """A word-level tokenizer: streamed output is readable (random) words, with ChatML's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL.values())
    vocab = {tok: i for i, tok in enumerate(specials + PUNCT + sorted(set(_WORDS)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    core.normalizer = None
    # Word-level decoding joins tokens with spaces, so streamed text is readable words.
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIAL["pad"],
        unk_token=SPECIAL["unk"],
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        additional_special_tokens=[SPECIAL["im_start"], SPECIAL["image"], SPECIAL["video"]],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
