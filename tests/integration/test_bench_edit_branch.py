"""The edit-and-branch benchmark on the smallest settings: it runs and reports what it should.

Timings are not checked (a loaded machine makes them anything); what holds whatever the timing is:
no vision-tower pass for the pictures of turns 1-2, a small prefill, the same greedy tokens both ways.
"""

from __future__ import annotations

import json

from llava_app.benchmarks import edit_branch
from llava_app.benchmarks.common import bench_images


def test_edit_turn_3_of_6_against_the_rebuild_recipe(tmp_path, tiny_cache):
    args = edit_branch.parse_args(["--model", "tiny-random", "--repeats", "2", "--new-tokens", "3",
                                   "--work", str(tmp_path)])
    report = json.loads(json.dumps(edit_branch.run(args, bench_images(tmp_path / "pictures"))))
    assert set(report["targets"]) == {"edit_ttft_ratio", "edit_vision_images_of_turns_1_2"}
    assert report["targets"]["edit_vision_images_of_turns_1_2"] == {"value": 0, "target": 0, "met": True}
    for edit in report["edits"]:
        naive, ours = edit["naive"], edit["ours"]
        assert naive["vision_calls"] == 1 and naive["vision_images"] == 4 and ours["vision_calls"] == 0
        assert ours["prefilled_tokens"] < naive["prefilled_tokens"] // 4 and ours["reused_tokens"] > 0
        assert edit["same_tokens"]
    back = report["switch_back"]
    assert back["ours"]["vision_calls"] == 0 and back["ours"]["prefilled_tokens"] < 25 and back["same_tokens"]
    assert back["naive"]["prefilled_tokens"] == back["ours"]["prompt_tokens"]
    assert "| edit turn 3 of 6 (median) |" in edit_branch.table(report)
