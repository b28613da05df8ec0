"""`colourbatch video` through click's CliRunner: exit codes together with what the user reads."""
import av
import pytest
from click.testing import CliRunner

from colourbatch.cli import cli


@pytest.fixture
def invoke(tiny_tinted_weights):
    def call(*args):
        runner = CliRunner()
        return runner.invoke(cli, ["video", *map(str, args), "--weights", str(tiny_tinted_weights),
                                   "--workers", "0", "--batch-size", "4"])
    return call


def test_default_output_beside_input_with_summary(make_clip, invoke):
    clip = make_clip("film.mp4", frames=6, audio="aac")
    res = invoke(clip)
    assert res.exit_code == 0, res.output
    out = clip.with_name("film.colour.mp4")
    assert out.exists() and "colourbatch video" in res.stdout and "6/6" in res.stdout
    assert "frames/s" in res.stdout and "greyscale input" in res.stdout
    with av.open(str(out)) as c:
        assert c.streams.video[0].frames == 6 and len(c.streams.audio) == 1


def test_folder_of_films_into_output_folder(tmp_path, make_clip, invoke):
    make_clip("a.mp4", frames=4)
    make_clip("b.mkv", frames=4, audio="aac")
    (tmp_path / "notes.txt").write_text("not a film")
    out = tmp_path.parent / (tmp_path.name + "-out")
    res = invoke(tmp_path, "-o", out, "--quiet")
    assert res.exit_code == 0, (res.output, res.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["a.colour.mp4", "b.colour.mp4"]
    assert res.stdout.count(": 4 frames, ") == 2, res.stdout


def test_part_compare_and_options(make_clip, invoke, tmp_path):
    clip = make_clip("film.mp4", frames=25)
    out = tmp_path / "part.mkv"
    res = invoke(clip, "-o", out, "--start", "0:00.2", "--duration", "0.4", "--compare",
                 "--crf", "23", "--preset", "ultrafast", "--quiet")
    assert res.exit_code == 0, res.output
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 10 and frames[0].width == 128


def test_several_inputs_need_an_output_folder(make_clip, invoke, tmp_path):
    a, b = make_clip("a.mp4"), make_clip("b.mp4")
    target = tmp_path / "one.mp4"
    target.write_bytes(b"x")
    res = invoke(a, b, "-o", target)
    assert res.exit_code == 2 and "must be a folder" in res.stderr


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file"), ("folder_empty", "no video files"), ("empty", "empty file"),
    ("text", "not a video"), ("same", "is the input"), ("no_out_dir", "does not exist"),
    ("end_and_duration", "--end or --duration"),
    ("still", "colourbatch pages"), ("nan", "not a time"), ("collide", "both"),
])
def test_refusals_come_before_the_model_in_one_line(tmp_path, make_clip, kind, message):
    clip = make_clip("ok.mp4")
    args = {
        "missing": [tmp_path / "nope.mp4"],
        "folder_empty": [tmp_path / "empty_dir"],
        "empty": [tmp_path / "zero.mp4"],
        "text": [tmp_path / "text.mp4"],
        "same": [clip, "-o", clip],
        "no_out_dir": [clip, "-o", tmp_path / "missing" / "out.mp4"],
        "end_and_duration": [clip, "--end", "1", "--duration", "1"],
        "still": [tmp_path / "photo.png"],
        "nan": [clip, "--end", "nan"],
        "collide": [clip, make_clip("ok.mkv"), "-o", tmp_path / "outdir"],
    }[kind]
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "zero.mp4").touch()
    (tmp_path / "text.mp4").write_text("hello\n")
    clip.with_name("taken.mp4").write_bytes(b"x")
    (tmp_path / "outdir").mkdir()
    import cv2
    import numpy as np
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((32, 32, 3), 128, np.uint8))
    before = sorted(p.name for p in tmp_path.iterdir())
    # Weights that do not exist: a run that loaded the model before checking its inputs
    # would answer about the weights instead.
    res = CliRunner().invoke(cli, ["video", *map(str, args), "--weights", str(tmp_path / "no.pt"),
                                   "--workers", "0"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    if kind == "nan":  # click's own usage error: its three lines, naming the option
        assert "'nan' is not a time" in res.stderr and "--end" in res.stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
        assert "weights" not in lines[0]
    assert "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp left


def test_truncated_input_exits_nonzero_keeping_what_decoded(tmp_path, make_clip, invoke):
    clip = make_clip("t.mp4", frames=30, faststart=True)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 4 // 5])
    res = invoke(cut, "--quiet")
    assert res.exit_code == 1
    assert "truncated" in res.stderr and "lost" in res.stderr
    assert (tmp_path / "cut.colour.mp4").exists()


def test_help_says_colour_is_repredicted():
    res = CliRunner().invoke(cli, ["video", "--help"])
    assert res.exit_code == 0 and "re-predicted" in res.output and "--compare" in res.output


def test_rerun_skips_finished_films_and_shards_split_a_folder(tmp_path, make_clip, invoke):
    films = tmp_path / "films"
    films.mkdir()
    for i in range(4):
        make_clip(f"films/f{i}.mp4", frames=3)
    out = tmp_path / "out"
    got = []
    for k in range(2):
        res = invoke(films, "-o", out, "--shard", f"{k}/2", "--quiet")
        assert res.exit_code == 0, res.output
        got.append(sorted(p.name for p in out.iterdir()) if out.exists() else [])
    # Shard 1 added only its own films to shard 0's; together: every film exactly once.
    assert set(got[0]) < set(got[1]) and got[1] == [f"f{i}.colour.mp4" for i in range(4)]
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "f2.colour.mp4").unlink()  # as if a killed run had not finished it...
    from colourbatch.files import temp_path
    temp_path(out / "f2.colour.mp4").write_bytes(b"half a film")  # ...and had left its temporary file
    res = invoke(films, "-o", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [f"f{i}.colour.mp4" for i in range(4)]
    assert "3 film(s) skipped" in res.stdout and "f2.mp4 -> " in res.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "f2.colour.mp4"} == \
        {k: v for k, v in stamp.items() if k != "f2.colour.mp4"}


def test_bad_shard_is_a_usage_error(make_clip, invoke):
    res = invoke(make_clip("a.mp4"), "--shard", "2/2")
    assert res.exit_code == 2 and "need 0 <= I < N" in res.stderr


def test_a_shard_from_the_environment_says_so(make_clip, invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("COLOURBATCH_SHARD", "1/7")
    films = tmp_path / "films"
    films.mkdir()
    make_clip("films/a.mp4")
    res = invoke(films, "-o", tmp_path / "out", "--quiet")
    assert res.exit_code == 0, res.output
    mine = sum(1 for p in (tmp_path / "out").glob("*.mp4")) if (tmp_path / "out").exists() else 0
    assert f"note: shard 1/7: {mine} of 1 films are this shard's" in res.stdout
