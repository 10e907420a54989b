"""PDFs become page images: at the model's resolution, labelled with their page, within the question's room."""

from __future__ import annotations

import pytest
from media_files import PAGE_COLOURS, encrypt_pdf, make_pdf

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.engine.base import Backend
from llava_app.storage.images import ImageError, ImageLimits, ModelImageSize
from llava_app.storage.media import MediaOptions, decode_media, sniff_kind
from llava_app.storage.pdf import parse_pages, render_scale

pytest.importorskip("pypdfium2")

RGB = {"red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
       "white": (255, 255, 255), "black": (0, 0, 0)}


class NoModel(Backend):
    """Uploads are taken in before any engine is asked; this one fails the test if it is."""

    def stream(self, request):
        raise AssertionError("the engine was asked")


def colour(picture) -> str:
    pixel = picture.image.getpixel((picture.image.width // 2, picture.image.height // 2))
    return min(RGB, key=lambda name: sum(abs(a - b) for a, b in zip(RGB[name], pixel, strict=False)))


def test_each_page_becomes_an_image_labelled_with_its_page():
    data = make_pdf(3)
    assert sniff_kind(data[:1024]) == "pdf"
    decoded = decode_media(data, "report.pdf", room=4)
    assert [p.name for p in decoded.pictures] == ["report.pdf p. 1", "report.pdf p. 2", "report.pdf p. 3"]
    assert [colour(p) for p in decoded.pictures] == PAGE_COLOURS[:3]
    assert decoded.warnings == [] and all(p.video == "" for p in decoded.pictures)


def test_pages_are_rendered_at_the_models_resolution():
    # A model that works at 384 x 384: a Letter page (612 x 792 pt) is rendered 384 px wide, same aspect.
    limits = ImageLimits(model_size=ModelImageSize(base=(384, 384)))
    page = decode_media(make_pdf(1), "report.pdf", room=1, limits=limits).pictures[0]
    assert page.image.size == (384, 497)
    assert render_scale(612, 792, limits) == pytest.approx(384 / 612, rel=0.01)
    # Without a known model resolution, the long side is the upload limit's (sharp text for OCR).
    plain = decode_media(make_pdf(1), "report.pdf", room=1).pictures[0]
    assert max(plain.image.size) == ImageLimits().max_side


def test_more_pages_than_fit_take_the_first_and_say_how_to_choose():
    decoded = decode_media(make_pdf(6), "report.pdf", room=4)
    assert [p.name for p in decoded.pictures] == [f"report.pdf p. {n}" for n in (1, 2, 3, 4)]
    assert [str(w) for w in decoded.warnings] == ["report.pdf has 6 pages; added pages 1-4 (4 go with one question). "
                                                  "Choose others with a page selection, e.g. pages 5-6."]


def test_a_page_selection_picks_pages_in_its_order():
    decoded = decode_media(make_pdf(6), "report.pdf", room=4, options=MediaOptions(pages="5-6, 2"))
    assert [p.name for p in decoded.pictures] == ["report.pdf p. 5", "report.pdf p. 6", "report.pdf p. 2"]
    assert [colour(p) for p in decoded.pictures] == ["white", "black", "green"]
    assert parse_pages("1-3,5", 6) == [1, 2, 3, 5] and parse_pages("4-", 6) == [4, 5, 6]
    assert parse_pages("", 2) == [1, 2] and parse_pages("2,2,1-2", 3) == [2, 1]


@pytest.mark.parametrize("selection, message", [
    ("9", "report.pdf: page 9 is not in the document; it has 6 page(s)."),
    ("3-1", "report.pdf: page 3-1 is not in the document; it has 6 page(s)."),
    ("one", "report.pdf: 'one' is not a page or a range of pages"),
])
def test_a_bad_page_selection_is_a_clear_message(selection, message):
    with pytest.raises(ImageError) as err:
        decode_media(make_pdf(6), "report.pdf", room=4, options=MediaOptions(pages=selection))
    assert str(err.value).startswith(message)


def test_encrypted_and_broken_pdfs_get_clear_messages():
    with pytest.raises(ImageError, match="secret.pdf is encrypted \\(it needs a password\\)"):
        decode_media(encrypt_pdf(make_pdf(2)), "secret.pdf", room=4)
    data = make_pdf(2)
    with pytest.raises(ImageError, match="cut.pdf could not be read as a PDF: the file looks damaged"):
        decode_media(data[:len(data) // 3], "cut.pdf", room=4)
    with pytest.raises(ImageError, match=r"big.pdf is [\d.]+ [KM]B; the limit is 0.1 KB"):
        decode_media(data, "big.pdf", room=4, limits=ImageLimits(max_bytes=100))


def test_the_service_reads_a_pdf_by_content_whatever_its_name(tmp_path, store):
    path = tmp_path / "scan.png"  # named like a picture, but a PDF inside
    path.write_bytes(make_pdf(2))
    service = ChatService(NoModel(), store, max_images=6, max_images_per_message=4)
    conv = Conversation()
    result = service.add_images(conv, [(str(path), "scan.png")])
    assert result.errors == [] and result.added == ["Image 1", "Image 2"]
    assert [im.name for im in conv.images] == ["scan.png p. 1", "scan.png p. 2"]
    options = MediaOptions(pages="2")
    again = service.add_images(conv, [(str(path), "scan.png")], options=options)
    assert again.added == [] and again.skipped == ["Image 2"]
    assert [str(e) for e in again.errors] == ["scan.png is already in this conversation as Image 2."]
