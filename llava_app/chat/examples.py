"""The page's clickable examples: images from ``assets/`` and a question (no gradio here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llava_app.errors import UserError
from llava_app.messages import Joined

if TYPE_CHECKING:
    from llava_app.chat.conversation import Conversation
    from llava_app.chat.service import ChatService

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"


@dataclass(frozen=True)
class Example:
    """Images to add and a question to put in the box; ``{0}``, ``{1}`` become the images' labels.

    ``prelude`` questions are asked (and answered) first, so the example shows a
    follow-up in a conversation that already has an answer.
    """

    key: str  # the button's translation key and element id
    images: tuple[str, ...]
    question: dict[str, str]  # language -> text
    prelude: dict[str, str] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        """The example's image files."""
        return [ASSETS_DIR / name for name in self.images]

    def text(self, texts: dict[str, str], language: str, labels: list[str]) -> str:
        """A question in ``language`` (English when missing) with the image labels filled in."""
        return (texts.get(language) or texts["en"]).format(*labels)


EXAMPLES = (
    Example("example_describe", ("scene.png",),
            {"en": "Describe {0} in detail.", "zh-CN": "详细描述{0}。"}),
    Example("example_ocr", ("receipt.png",),
            {"en": "Read the receipt in {0}: what is the total, and which line costs the most?",
             "zh-CN": "读一下{0}中的收据：总金额是多少？哪一行最贵？"}),
    Example("example_compare", ("scene.png", "scene_changed.png"),
            {"en": "What changed between {0} and {1}? List every difference.",
             "zh-CN": "{0}和{1}之间有什么变化？请列出所有不同之处。"}),
    Example("example_followup", ("bar_chart.png",),
            {"en": "By how many cups is it higher than the lowest month?",
             "zh-CN": "它比最低的月份多多少杯？"},
            prelude={"en": "Which month has the highest bar in {0}?", "zh-CN": "{0}中哪个月的柱子最高？"}),
    Example("example_diagram", ("diagram.png",),
            {"en": "Explain the steps shown in {0}, in order.", "zh-CN": "按顺序解释{0}中展示的步骤。"}),
)


def available_examples() -> list[Example]:
    """The examples whose images are present (a wheel without ``assets/`` shows none)."""
    return [ex for ex in EXAMPLES if all(p.is_file() for p in ex.paths())]


def language_of(accept_language: str | None) -> str:
    """``zh-CN`` when the browser prefers Chinese, else ``en`` (the example questions' languages)."""
    first = (accept_language or "").split(",")[0].strip().lower()
    return "zh-CN" if first.startswith("zh") else "en"


def load_example(service: ChatService, conv: Conversation, example: Example,
                 language: str = "en") -> tuple[list[str], str]:
    """Add the example's images to ``conv`` (kept once if already there) and ask its prelude.

    Returns the images' labels and the question for the box. The conversation is kept:
    the question names the labels the images got in it.
    """
    labels = []
    for path in example.paths():
        result = service.add_images(conv, [(str(path), path.name)])
        got = result.added or result.skipped
        if not got:
            raise UserError(Joined(result.errors))
        labels.append(got[0])
    if example.prelude:
        service.ask(conv, example.text(example.prelude, language, labels))
    return labels, example.text(example.question, language, labels)
