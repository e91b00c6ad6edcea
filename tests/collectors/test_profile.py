"""Device profiles: decoding registers (golden words), planning reads, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from collectors.codec import DataType, Order, decode_number, encode_number, scaled, width
from collectors.profile import Profile, ProfileError, builtin_profiles, load_profile


def _profile(**kw: object) -> Profile:
    base: dict[str, object] = {"name": "t", "source": "test profile, no vendor document",
                               "registers": [
                                   {"quantity": "active_power_kw", "address": 10, "type": "int32",
                                    "scale": 0.001},
                                   {"quantity": "energy_import_kwh", "address": 12,
                                    "type": "uint32", "scale": 0.1},
                                   {"quantity": "frequency_hz", "address": 20, "type": "uint16",
                                    "scale": 0.01},
                                   {"quantity": "temperature_c", "address": 0, "function": 3,
                                    "type": "int16", "scale": 0.1, "offset": -40},
                               ]}
    base.update(kw)
    return Profile.model_validate(base)


def test_plan_coalesces_contiguous_registers_per_function_code() -> None:
    plan = _profile().plan()
    assert [(r.function, r.address, r.count) for r in plan] == [(3, 0, 1), (4, 10, 4), (4, 20, 1)]


def test_plan_bridges_gaps_only_where_the_profile_allows() -> None:
    plan = _profile(max_gap=6).plan()
    assert [(r.function, r.address, r.count) for r in plan] == [(3, 0, 1), (4, 10, 11)]


def test_plan_respects_the_read_size_limit() -> None:
    plan = _profile(max_gap=6, max_read_registers=4).plan()
    assert [(r.function, r.address, r.count) for r in plan] == [(3, 0, 1), (4, 10, 4), (4, 20, 1)]


def test_decode_applies_scale_offset_and_units() -> None:
    p = _profile(max_gap=6)
    words = {10: encode_number(812_500, DataType.INT32, Order.ABCD),
             12: encode_number(482_101, DataType.UINT32, Order.ABCD),
             20: [5002], 0: [0x00FA]}
    reads = []
    for r in p.plan():
        block = [0] * r.count
        for addr, w in words.items():
            if r.address <= addr < r.end:
                block[addr - r.address:addr - r.address + len(w)] = w
        reads.append((r, block))
    assert p.decode(reads) == pytest.approx({"active_power_kw": 812.5,
                                             "energy_import_kwh": 48210.1,
                                             "frequency_hz": 50.02, "temperature_c": -15.0})


@pytest.mark.parametrize(("change", "expected"), [
    ({"registers": [{"quantity": "power_w", "address": 0, "type": "int16"}]},
     "quantity 'power_w' is not in the vocabulary"),
    ({"registers": [{"quantity": "active_power_kw", "address": 0, "type": "int32"},
                    {"quantity": "frequency_hz", "address": 1, "type": "int16"}]},
     "overlap at address 1"),
    ({"registers": [{"quantity": "active_power_kw", "address": 65535, "type": "int32"}]},
     "runs past register 65535"),
    ({"registers": [{"quantity": "active_power_kw", "address": 0, "type": "int24"}]},
     "registers.0.type"),
    ({"registers": [{"quantity": "active_power_kw", "address": 0, "type": "int16",
                     "function": 6}]}, "registers.0.function"),
    ({"max_read_registers": 126}, "max_read_registers"),
])
def test_bad_profiles_say_what_is_wrong(change: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        _profile(**change)


def test_shipped_profiles_load_and_name_their_source() -> None:
    names = builtin_profiles()
    assert {"eastron-sdm630", "sunspec"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert len(p.source) > 10
        if isinstance(p, Profile):
            assert all(r.count <= p.max_read_registers for r in p.plan())


def test_profile_files_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "m", "source": "a vendor manual, rev 3",
                                    "registers": [{"quantity": "active_power_kw", "address": 3,
                                                   "type": "float32"}]}))
    assert load_profile("m.yaml", base=tmp_path).registers[0].address == 3


def test_unknown_profile_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ProfileError, match=r"no profile named 'sdm999'.*eastron-sdm630"):
        load_profile("sdm999")


SUNSPEC_LIKE = {
    "name": "test-inverter", "source": "a SunSpec-style map written for this test",
    "order": "ABCD", "max_gap": 10, "na": [0x8000],
    "scale_factors": [{"name": "W_SF", "address": 14, "function": 3},
                      {"name": "WH_SF", "address": 17, "function": 3}],
    "registers": [
        {"quantity": "active_power_kw", "address": 13, "function": 3, "type": "int16",
         "scale": 0.001, "scale_factor": "W_SF"},
        {"quantity": "energy_export_kwh", "address": 15, "function": 3, "type": "uint32",
         "scale": 0.001, "scale_factor": "WH_SF", "na": [0]},
        {"quantity": "frequency_hz", "address": 18, "function": 3, "type": "uint16",
         "scale": 0.01, "na": [0xFFFF]},
    ],
}


def _decode(profile: Profile, image: dict[int, int]) -> dict[str, float]:
    return profile.decode([(r, [image.get(a, 0) for a in range(r.address, r.end)])
                           for r in profile.plan()])


def test_scale_factor_registers_are_read_in_the_same_request_and_applied() -> None:
    p = Profile.model_validate(SUNSPEC_LIKE)
    assert [(r.function, r.address, r.count) for r in p.plan()] == [(3, 13, 6)]
    # W = 4321 x 10^1 W; WH = 123456 x 10^2 Wh; Hz = 5001 x 0.01
    image = {13: 4321, 14: 1, 15: 0x0001, 16: 0xE240, 17: 2, 18: 5001}
    assert _decode(p, image) == {"active_power_kw": 43.21, "energy_export_kwh": 12345.6,
                                 "frequency_hz": 50.01}
    # the device changes its scale factor while running
    image[14] = 0xFFFF  # -1
    assert _decode(p, image)["active_power_kw"] == 0.4321


def test_not_available_values_and_scale_factors_leave_the_value_out() -> None:
    p = Profile.model_validate(SUNSPEC_LIKE)
    image = {13: 0x8000, 14: 0, 15: 0, 16: 0, 17: 0, 18: 0xFFFF}
    assert _decode(p, image) == {}
    image = {13: 100, 14: 0x8000, 15: 0, 16: 7, 17: 0, 18: 5000}
    assert _decode(p, image) == {"energy_export_kwh": 0.007, "frequency_hz": 50.0}


def test_counters_carry_their_register_wrap_point() -> None:
    p = Profile.model_validate({**SUNSPEC_LIKE, "scale_factors": [], "registers": [
        {"quantity": "energy_import_kwh", "address": 0, "type": "uint32", "scale": 0.01},
        {"quantity": "energy_export_kwh", "address": 2, "type": "float32"},
        {"quantity": "active_power_kw", "address": 4, "type": "int16"}]})
    assert p.counters() == {"energy_import_kwh": 2**32 * 0.01, "energy_export_kwh": None}


def test_a_scale_factor_that_is_not_declared_is_named() -> None:
    bad = {**SUNSPEC_LIKE, "scale_factors": SUNSPEC_LIKE["scale_factors"][:1]}  # type: ignore[index]
    with pytest.raises(ValidationError, match=r"scale_factor 'WH_SF' is not in scale_factors"):
        Profile.model_validate(bad)


def test_profile_file_errors_name_the_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**SUNSPEC_LIKE, "order": "ACBD"}))
    with pytest.raises(ProfileError, match=r"bad.yaml: order: Input should be 'ABCD'"):
        load_profile(str(path))


_NUMBERS = [t for t in DataType if t is not DataType.BOOL]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_NUMBERS), st.sampled_from(list(Order)), st.data())
def test_an_unscaled_value_decodes_as_the_scaled_path_would(dtype: DataType, order: Order,
                                                            data: st.DataObject) -> None:
    # decode skips scaled() for registers without scale, offset or scale factor; that is only
    # right if scaled() would give every such value back unchanged
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=width(dtype),
                               max_size=width(dtype)))
    p = Profile.model_validate({"name": "t", "source": "test profile, no vendor document",
                                "order": order.value, "registers": [
                                    {"quantity": "active_power_kw", "address": 0,
                                     "type": dtype.value}]})
    [read] = p.plan()
    raw = decode_number(words, dtype, order)
    expected = {} if raw is None else {"active_power_kw": scaled(raw, 1.0, 0.0)}
    assert p.decode([(read, words)]) == expected
