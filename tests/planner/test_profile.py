"""Profile data: NumPy-written .npz and the ConfigMap's JSON, interpolation, the mocker model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dynamo.engines.mocker.timing import decode_ms, prefill_ms
from dynamo.planner.npy import load_npz
from dynamo.planner.profile import interp, load_profile, mocker_profile
from dynamo.runtime.errors import ConfigError

DATA = Path(__file__).parent / "data" / "profile"


def test_reads_npz_written_by_numpy() -> None:
    arrays = load_npz(DATA / "selected_decode_interpolation" / "raw_data.npz")
    assert set(arrays) == {
        "x_kv_usage",
        "y_context_length",
        "z_itl",
        "z_thpt_per_gpu",
        "max_kv_tokens",
    }
    assert arrays["max_kv_tokens"] == [100000.0]
    assert arrays["y_context_length"][:6] == [500.0] * 5 + [2000.0]  # int64 array


def test_npz_and_json_layouts_give_the_same_profile(tmp_path: Path) -> None:
    from_npz = load_profile(DATA)
    for name in ("prefill_raw_data.json", "decode_raw_data.json"):
        shutil.copy(DATA / name, tmp_path / name)
    from_json = load_profile(tmp_path)
    assert from_npz.prefill == from_json.prefill
    assert from_npz.decode == from_json.decode
    assert "raw_data.npz" in from_npz.source and "prefill_raw_data.json" in from_json.source


def test_prefill_interpolation_is_linear_and_clamped() -> None:
    prefill = load_profile(DATA).prefill
    assert prefill.ttft(512) == 40.0
    assert prefill.ttft(768) == 55.0  # halfway between 512 (40 ms) and 1024 (70 ms)
    assert prefill.ttft(10) == 20.0 and prefill.ttft(10**6) == 300.0
    assert prefill.throughput_per_gpu(2048) == pytest.approx(2048 / 0.140)


def test_decode_itl_and_best_throughput() -> None:
    decode = load_profile(DATA).decode
    # itl = 10 + 40 kv + ctx/200 on the profiled grid
    assert decode.itl(0.5, 500) == pytest.approx(32.5)
    assert decode.itl(0.5, 1250) == pytest.approx(36.25)  # between the two context rows
    # the largest KV usage with ITL <= 32.5 ms at ctx 500 is 0.5
    thpt, feasible = decode.best_throughput_per_gpu(32.5, 500)
    assert feasible
    assert thpt == pytest.approx(0.5 * 100000 / 500 / 0.0325, rel=0.02)
    _, feasible = decode.best_throughput_per_gpu(5.0, 500)
    assert not feasible
    assert decode.itl_at_concurrency(100, 500) == pytest.approx(decode.itl(0.5, 500))


def test_missing_profile_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(tmp_path)
    assert f"no prefill profile in {tmp_path}" in str(info.value)
    assert "selected_prefill_interpolation/raw_data.npz and prefill_raw_data.json" in str(
        info.value
    )


def test_bad_profile_files(tmp_path: Path) -> None:
    (tmp_path / "prefill_raw_data.json").write_text('{"prefill_isl": [1, 2]}')
    shutil.copy(DATA / "decode_raw_data.json", tmp_path)
    with pytest.raises(ConfigError, match="no 'prefill_ttft'"):
        load_profile(tmp_path)
    (tmp_path / "prefill_raw_data.json").write_text("not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(tmp_path)
    (tmp_path / "selected_prefill_interpolation").mkdir()
    (tmp_path / "selected_prefill_interpolation" / "raw_data.npz").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"cannot read the \.npz"):
        load_profile(tmp_path)


def test_mocker_profile_is_the_mocker_timing_model() -> None:
    profile = mocker_profile(speedup_ratio=2.0)
    assert profile.prefill.ttft(1024) == pytest.approx(prefill_ms(1024) / 2)
    assert profile.prefill.throughput_per_gpu(1024) == pytest.approx(
        1024 / (prefill_ms(1024) / 2000)
    )
    # 256 sequences of 1024 tokens fill a quarter of the default 1M-token cache
    assert profile.decode.itl(0.25, 1024) == pytest.approx(decode_ms(0.25) / 2)
    thpt, feasible = profile.decode.best_throughput_per_gpu(1000.0, 1024)
    assert feasible
    assert thpt == pytest.approx(256 / (decode_ms(0.25) / 2000), rel=1e-6)  # max_num_seqs caps it


def test_interp() -> None:
    assert interp(1.5, [1.0, 2.0], [10.0, 20.0]) == 15.0
    assert interp(0.0, [1.0, 2.0], [10.0, 20.0]) == 10.0
