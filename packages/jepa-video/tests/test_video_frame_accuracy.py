"""Frame accuracy of every installed backend on generated files that expose the known failure
modes (jepa_video.testvideos): each frame shows its index as a code, and the reference is one
sequential PyAV decode. A backend returns exactly the reference frames, or raises the
documented error (CorruptSampleError; FramesUnavailableError past the decodable count)."""

from __future__ import annotations

import numpy as np
import pytest
from jepa_core.data import CorruptSampleError
from jepa_video import decoders
from jepa_video.decoders import FramesUnavailableError, available_backends, open_video
from jepa_video.testvideos import BITS, CASES, draw_code, make_cases, read_code, reference_decode

# colour conversion (swscale versions, YUV->RGB rounding) differs slightly between libraries
TOL_MEAN, TOL_P99 = 1.5, 8


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    paths = make_cases(tmp_path_factory.mktemp("cases"))
    return {n: (p, reference_decode(p)) for n, p in paths.items()}


@pytest.fixture(autouse=True)
def _fresh_counts(monkeypatch):
    # every test learns the frame counts itself (the caches are per process)
    monkeypatch.setattr(decoders, "_DECODABLE", {})
    monkeypatch.setattr(decoders, "_INDEXES", {})


def test_the_code_reads_back_every_index():
    assert [read_code(draw_code(i)) for i in range(2**BITS)] == list(range(2**BITS))
    assert read_code(np.full((64, 64, 3), 128, np.uint8)) == -1


def test_reference_decode_holds_the_frames_each_case_was_built_to_have(cases):
    for name, (_, ref) in cases.items():
        codes = [read_code(f) for f in ref]
        case = CASES[name]
        if case.damage is None:
            assert codes == list(range(case.frames)), name  # codec reproduces the code exactly
        else:
            assert 0 < len(ref) < case.frames and -1 not in codes, name
            assert codes == sorted(codes), name  # still in presentation order
    # the damaged files really lie: their headers / packets list more frames than decode
    assert len(cases["truncated_avi"][1]) == 17 and len(cases["bad_last_frame_mp4"][1]) == 47
    for name in ("truncated_avi", "truncated_mp4"):
        info = decoders.stream_index(cases[name][0])
        assert info.header_frames == CASES[name].frames > len(cases[name][1]), name


def _requests(n: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [list(range(n)), [n - 1], [0], np.linspace(0, n - 1, 7).astype(int).tolist(),
            [n // 2, 3, n - 1, n // 2], rng.integers(0, n, 16).tolist()]


def _assert_same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    assert [read_code(f) for f in got] == [read_code(f) for f in want], what
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.mean() < TOL_MEAN and np.percentile(diff, 99) <= TOL_P99, (what, diff.mean())


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("name", list(CASES))
def test_backend_returns_the_sequential_frames_or_the_documented_error(cases, backend, name):
    path, ref = cases[name]
    try:
        video = open_video(path, backend)
    except CorruptSampleError as err:
        # only a damaged file may be refused, and the error names it
        assert CASES[name].damage is not None and path.name in str(err), (backend, name, err)
        return
    with video:
        # never more frames than decode, whatever the header says (found at latest on first use)
        assert len(ref) <= video.num_frames <= max(len(ref), CASES[name].frames)
        for idx in _requests(video.num_frames):
            try:
                got = video.get_frames(idx)
            except FramesUnavailableError as err:
                assert err.decodable == len(ref) and max(idx) >= len(ref), (backend, name, err)
                assert video.num_frames == len(ref) and path.name in str(err)
                continue
            except IndexError:
                assert max(idx) >= video.num_frames == len(ref)  # lowered by an earlier failure
                continue
            except CorruptSampleError as err:
                # decord cannot decode up to the frame before a damaged last packet: an error, not
                # a wrong frame
                assert CASES[name].damage is not None and path.name in str(err), (backend, name, err)
                continue
            _assert_same(got, ref[idx], f"{backend} {name} {idx}")
        assert video.num_frames <= max(len(ref), CASES[name].frames)


def test_backends_agree_on_every_case_both_decode(cases):
    backends = available_backends()
    if len(backends) < 2:
        pytest.skip(f"only {backends} installed")
    for name, (path, ref) in cases.items():
        got = {}
        for b in backends:
            try:
                with open_video(path, b) as v:
                    n = min(v.num_frames, len(ref))
                    got[b] = v.get_frames(range(n))
            except CorruptSampleError:
                continue
        assert "pyav" in got, name  # the reference backend decodes every case
        for b, frames in got.items():
            n = min(len(frames), len(got["pyav"]))
            _assert_same(frames[:n], got["pyav"][:n], f"{b} vs pyav on {name}")


def test_a_count_learned_once_is_kept_for_the_file(cases):
    path, ref = cases["bad_last_frame_mp4"]
    with open_video(path, "pyav") as v:
        assert v.num_frames == 48  # 48 whole packets: only decoding shows the last is broken
        with pytest.raises(FramesUnavailableError, match=r"frames \[47\] do not decode: only 47"):
            v.get_frames([3, 47])
        assert v.num_frames == 47
    assert decoders.known_frame_count(path) == 47
    # the count survives the trip from a DataLoader worker
    import pickle

    assert pickle.loads(pickle.dumps(FramesUnavailableError("x", 47))).decodable == 47
    with open_video(path, "pyav") as v:
        assert v.num_frames == 47
    # a count given by an index is believed at once
    assert open_video(cases["h264_mp4"][0], "pyav", num_frames=40).num_frames == 40
