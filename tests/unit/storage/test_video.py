"""Videos become keyframes: evenly spaced, in time order, named with their time, within limits."""

from __future__ import annotations

import pytest
from conftest import make_image
from media_files import make_video

from llava_app.chat.conversation import Conversation
from llava_app.chat.service import ChatService
from llava_app.engine.base import Backend
from llava_app.storage.images import ImageError
from llava_app.storage.media import MediaOptions, decode_media, sniff_kind
from llava_app.storage.records import ConversationRecord
from llava_app.storage.video import VideoLimits, format_time, video_frames

pytest.importorskip("av")


class NoModel(Backend):
    """Uploads are taken in before any engine is asked; this one fails the test if it is."""

    def stream(self, request):
        raise AssertionError("the engine was asked")


def red(picture) -> int:
    return picture.image.getpixel((5, 5))[0]


@pytest.mark.parametrize("fmt, codec", [("mp4", "mpeg4"), ("mp4", "libx264"), ("webm", "libvpx"), ("mov", "mpeg4")])
def test_a_clip_gives_evenly_spaced_keyframes_in_time_order(fmt, codec):
    data = make_video(seconds=4, fps=10, fmt=fmt, codec=codec)
    assert sniff_kind(data[:1024]) == "video"
    decoded = decode_media(data, f"clip.{fmt}", room=4)
    names = [p.name for p in decoded.pictures]
    # The middle of each quarter of a 4 s clip: 0.5 s, 1.5 s, 2.5 s, 3.5 s.
    assert names == [f"clip.{fmt} @ 0:0{t}.5" for t in range(4)]
    reds = [red(p) for p in decoded.pictures]
    assert reds == sorted(reds) and reds[-1] - reds[0] > 150  # later frames are redder: time order
    # Each frame is the one at its time (the ramp is linear: ~255 * t / 3.9 s).
    for t, value in zip((0.5, 1.5, 2.5, 3.5), reds, strict=False):
        assert abs(value - 255 * t / 3.9) < 25
    assert all(p.video == f"clip.{fmt}" for p in decoded.pictures) and decoded.warnings == []


def test_frame_count_is_the_users_choice_up_to_the_room_left():
    data = make_video(seconds=6, fps=5)
    assert len(decode_media(data, "clip.mp4", room=6, options=MediaOptions(frames=6)).pictures) == 6
    assert len(decode_media(data, "clip.mp4", room=6, options=MediaOptions(frames=2)).pictures) == 2
    cut = decode_media(data, "clip.mp4", room=3, options=MediaOptions(frames=6))
    assert len(cut.pictures) == 3
    assert [str(w) for w in cut.warnings] == ["clip.mp4: took 3 frame(s), the most that still go with this question "
                                              "(6 were asked for)."]


def test_a_clip_with_fewer_frames_than_asked_gives_each_once():
    decoded = decode_media(make_video(seconds=1, fps=2), "short.mp4", room=4)
    assert [p.name for p in decoded.pictures] == ["short.mp4 @ 0:00.0", "short.mp4 @ 0:00.5"]


def test_long_clips_are_named_in_minutes_and_seconds():
    decoded = decode_media(make_video(seconds=100, fps=2, size=(32, 32)), "talk.mp4", room=4)
    assert [p.name for p in decoded.pictures] == ["talk.mp4 @ 0:12", "talk.mp4 @ 0:37", "talk.mp4 @ 1:02",
                                                  "talk.mp4 @ 1:27"]
    assert format_time(3725) == "1:02:05" and format_time(12.34, tenths=True) == "0:12.3"


def test_progress_is_reported_frame_by_frame():
    seen = []
    video_frames(make_video(), "clip.mp4", 4, progress=lambda fraction, message: seen.append((fraction, message)))
    assert [f for f, _ in seen] == [0.25, 0.5, 0.75, 1.0]
    assert str(seen[-1][1]) == "clip.mp4: frame 4 of 4"


@pytest.mark.parametrize("limits, message", [
    (VideoLimits(max_seconds=3), "clip.mp4 is 0:04 long; videos up to 0:03 are read"),
    (VideoLimits(max_frame_pixels=1000), "clip.mp4 has 64 x 48 frames; videos up to 0.0 megapixels"),
    (VideoLimits(max_bytes=1000), r"clip.mp4 is [\d.]+ KB; the limit is 1.0 KB"),
])
def test_limits_on_length_frame_size_and_file_size(limits, message):
    with pytest.raises(ImageError, match=message):
        video_frames(make_video(), "clip.mp4", 4, limits)


@pytest.mark.parametrize("payload", [
    lambda: make_video()[:1500],  # cut short: no index
    lambda: b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200,  # an mp4 header and nothing else
    lambda: b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 4,  # WebM magic, garbage after
])
def test_a_broken_video_gets_a_clear_message(payload):
    with pytest.raises(ImageError, match="broken.mp4 could not be read as a video: the file is damaged or its "
                                         "format or codec is not supported"):
        decode_media(payload(), "broken.mp4", room=4)


def test_image_formats_inside_iso_files_are_not_taken_for_videos():
    assert sniff_kind(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 16) is None
    assert sniff_kind(b"\x00\x00\x00\x18ftypavif" + b"\x00" * 16) is None


def test_the_service_reads_a_video_by_content_and_tells_the_model_it_is_one_clip(tmp_path, store):
    path = tmp_path / "upload.bin"  # the name says nothing: the content does
    path.write_bytes(make_video())
    photo = tmp_path / "photo.png"
    photo.write_bytes(make_image("green"))
    service = ChatService(NoModel(), store, max_images=6, max_images_per_message=5)
    conv = Conversation()
    result = service.add_images(conv, [(str(photo), "photo.png"), (str(path), "clip.mp4")])
    assert result.errors == [] and result.added == ["Image 1", "Image 2", "Image 3", "Image 4", "Image 5"]
    assert [im.name for im in conv.images][1:] == [f"clip.mp4 @ 0:0{t}.5" for t in range(4)]
    service.ask(conv, "What happens in the video?")
    parts = conv.messages()[0]["content"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    lead = ("The next 4 images are frames of one video, clip.mp4, in time order (Image 2 at 0:00.5, "
            "Image 3 at 0:01.5, Image 4 at 0:02.5, Image 5 at 0:03.5).\n")  # a line of its own
    assert texts == ["Image 1:", lead, "Image 2:", "Image 3:", "Image 4:", "Image 5:", "What happens in the video?"]
    # The lead sits right before the first frame's label, after the photo that is not part of the clip.
    kinds = [p["type"] for p in parts]
    assert kinds[:4] == ["text", "image", "text", "text"] and parts[2]["text"] == lead


def test_a_video_that_does_not_fit_the_question_is_cut_with_a_warning(tmp_path, store):
    path = tmp_path / "clip.mp4"
    path.write_bytes(make_video())
    service = ChatService(NoModel(), store, max_images=6, max_images_per_message=2)
    conv = Conversation()
    result = service.add_images(conv, [(str(path), "clip.mp4")])
    assert result.added == ["Image 1", "Image 2"] and result.errors == []
    assert "took 2 frame(s)" in str(result.warnings[0])
    refused = service.add_images(conv, [(str(path), "again.mp4")])
    assert refused.added == [] and "At most 2 new images go with one question" in str(refused.errors[0])


def test_a_saved_conversation_still_knows_which_images_are_frames_of_a_clip(tmp_path, store):
    path = tmp_path / "clip.mp4"
    path.write_bytes(make_video())
    conv = Conversation()
    ChatService(NoModel(), store).add_images(conv, [(str(path), "clip.mp4")])
    record = conv.to_record()
    back = ConversationRecord.from_json(record.to_json())  # through JSON, as a saved conversation is
    back.files.update(record.files)
    restored = Conversation.restore(back)
    assert [(im.name, im.video, im.frame_time) for im in restored.images] == [
        (f"clip.mp4 @ 0:0{t}.5", "clip.mp4", f"0:0{t}.5") for t in range(4)]
