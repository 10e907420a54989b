"""Each benchmark's core on the smallest settings, in this process: it runs and reports what it should.

The figures themselves are not checked (a loaded machine makes them anything); the report's
shape is, and the properties that hold whatever the timing: greedy answers identical both
ways, no vision-tower call once the features are cached, Gradio's records freed by our cleanup.
"""

from __future__ import annotations

import json

import pytest

from llava_app.benchmarks import concurrency, context, decode_step, multiturn, sessions_memory, ttft
from llava_app.benchmarks.common import bench_images
from llava_app.benchmarks.naive_vs_ours import InProcess, run_chat
from llava_app.benchmarks.stream_rate import run_stream, served_here


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return bench_images(tmp_path_factory.mktemp("pictures"))


def test_multiturn_chat_naive_against_ours(tmp_path, tiny_cache, pictures):
    args = multiturn.parse_args(["--model", "tiny-random", "--turns", "1", "--new-tokens", "3", "--no-stream",
                                 "--work", str(tmp_path)])
    sides = {name: InProcess(args, name, pictures) for name in ("naive", "ours")}
    naive, ours = run_chat(args, sides)
    report = json.loads(json.dumps(multiturn.summarise(naive, ours, None, args)))

    assert [r["turn"] for r in report["rows"]] == ["1", "after undo", "after eviction"]
    assert set(report["targets"]) == {"ttft_ratio_turn1", "identical_greedy_tokens", "no_vision_call_after_eviction"}
    assert report["targets"]["identical_greedy_tokens"] == {"value": True, "target": True, "met": True}
    assert report["targets"]["no_vision_call_after_eviction"]["met"] and ours["evicted"]
    first, after_undo, evicted = report["rows"]
    assert first["naive_vision_images"] == first["ours_vision_images"] == 4
    assert [r["naive_vision_calls"] for r in report["rows"]] == [1, 1, 1]
    assert [r["ours_vision_calls"] for r in report["rows"]] == [1, 0, 0]
    assert first["ours_prefilled"] == first["naive_prefilled"]
    assert after_undo["ours_prefilled"] < after_undo["naive_prefilled"] // 4  # the prefix's KV was reused
    assert evicted["ours_prefilled"] == evicted["naive_prefilled"]  # the KV is gone; the features are not
    assert all(t["ttft_s"] > 0 and t["ttft_s"] <= t["total_s"] and len(t["new_token_ids"]) <= 3
               for t in naive["turns"] + ours["turns"])
    assert "| after eviction |" in multiturn.table(report)


def test_streaming_rate_through_gradio_client(tmp_path, tiny_cache, pictures):
    args = multiturn.parse_args(["--stream-tokens", "6", "--stream-repeats", "1", "--work", str(tmp_path)])
    with served_here(args) as server:
        stream = run_stream(args, pictures, server)

    assert stream["model"] == "tiny-random" and len(stream["runs"]) == 1
    assert 0 < stream["tokens"] <= 6
    assert stream["same_text"] is True
    assert stream["raw_e2e_tok_s"] > 0 and stream["app_e2e_tok_s"] > 0 and stream["updates_per_answer"] >= 1
    assert stream["raw_first_chunk_s"] > 0 and stream["app_first_chunk_s"] > 0
    report = multiturn.summarise(None, None, stream, args)
    assert set(report["targets"]) == {"stream_rate_ratio"} and report["rows"] == []
    assert "Streaming (tiny-random, " in multiturn.table(report)


def test_ttft_breakdown_of_a_follow_up_against_gradios_floor(tmp_path, tiny_cache, pictures):
    args = ttft.parse_args(["--model", "tiny-random", "--repeats", "2", "--new-tokens", "2", "--work", str(tmp_path)])
    report = json.loads(json.dumps(ttft.run(args, pictures[0])))

    assert set(report["stages_s"]) == {key for key, _ in ttft.STAGES} and len(report["follow_ups"]) == 2
    for follow in report["follow_ups"]:  # the stages are consecutive: they add up to the time to first chunk
        assert all(v >= 0 for v in follow["stages"].values())
        assert sum(follow["stages"].values()) == pytest.approx(follow["ttft_s"], abs=1e-6)
        assert 0 < follow["prefilled_tokens"] < follow["prompt_tokens"]  # a follow-up reuses its prefix
    pairs = [f["ttft_s"] - b for f, b in zip(report["follow_ups"], report["floor_runs_s"], strict=False)]
    assert report["floor_s"] > 0 and report["ours_s"] == pytest.approx(sum(pairs) / 2)  # the median of two
    assert "| prefill |" in ttft.table(report) and "Gradio's floor" in ttft.table(report)


def test_context_fitting_cost(tmp_path, tiny_cache):
    out = tmp_path / "context.json"
    result = context.main(["--model", "tiny-random", "--window", "150", "--turns", "4", "--max-new-tokens", "3",
                           "--out", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [r["turn"] for r in result["rows"]] == [0, 1, 2, 3]
    assert result["drops"] >= 1 and result["drop_turns"]["turns"] == result["drops"]
    assert result["plain_turns"]["turns"] + result["drops"] == 4
    assert all(r["prompt_tokens"] <= 150 and r["fit_s"] > 0 and r["generate_s"] > 0 for r in result["rows"])
    assert 0 < result["plain_turns"]["fit_share"] < 1


def test_sessions_memory_with_and_without_cleanup(tiny_cache):
    rows = [sessions_memory.run(1, cleanup, ttl=0.5, warmup=0, settle_s=1.5) for cleanup in (False, True)]

    assert json.loads(json.dumps(rows)) == rows
    off, on = rows
    assert off["gradio_session_records"] >= 1  # Gradio keeps them
    assert on["gradio_session_records"] == 0  # our cleanup freed them
    assert all(r["live_conversations"] == 0 and r["image_files_left"] == 0 and r["sessions"] == 1 for r in rows)
    assert isinstance(on["kb_left_per_session"], float)


def test_concurrency_batched_against_one_at_a_time(tmp_path, tiny_cache, pictures):
    args = concurrency.parse_args(["--model", "tiny-random", "--clients", "2", "--batch", "2", "--new-tokens", "6",
                                   "--rounds", "2", "--late-repeats", "1", "--threads", "1", "--engine", "app",
                                   "--work", str(tmp_path)])
    report = json.loads(json.dumps(concurrency.run(args, pictures[:2])))

    assert report["identical"] is True and report["same_as_one_at_a_time"] is True and report["engine"] == "app"
    for side in ("batched", "one_at_a_time"):
        r = report[side]
        assert r["tokens"] == 12 and r["rate_tok_s"] > 0 and len(r["together_texts"]) == 2
        assert all(t.strip() for t in r["together_texts"]) and r["late_ttft_s"] > 0
    assert report["batched"]["max_batch"] == 2 and report["one_at_a_time"]["max_batch"] == 1
    assert len(report["round_ratios"]) == 2 and len(report["batched"]["rounds"]) == 2
    assert "| aggregate rate, all asking at once, median of 2 rounds (tokens/s) |" in concurrency.table(report)


def test_decode_step_with_and_without_the_few_row_path(tiny_cache):
    args = decode_step.parse_args(["--model", "tiny-faithful-interleave", "--context", "20", "--steps", "2",
                                   "--rounds", "2"])
    report = json.loads(json.dumps(decode_step.run(args)))

    assert set(report["median_ms"]) == set(decode_step.WAYS)
    for way in decode_step.WAYS:
        assert all(report["median_ms"][way][w]["step"] > 0 and report["median_ms"][way][w]["head"] > 0 for w in "14")
        assert report["batching_ceiling"][way] == pytest.approx(4 / report["step_ratio"][way])
    assert "| few-row W·xᵀ: whole step |" in decode_step.table(report)


def test_remote_turns_cpu_with_pictures_kept_and_without(tmp_path):
    from llava_app.benchmarks import remote_turns

    out = tmp_path / "remote_turns.json"
    result = remote_turns.main(["--pictures", "2", "--size", "320x240", "--turns", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert set(result["cpu_s_per_turn"]) == {"encoded", "kept", "prebuilt"}
    assert all(len(v) == 2 and all(s > 0 for s in v) for v in result["cpu_s_per_turn"].values())
