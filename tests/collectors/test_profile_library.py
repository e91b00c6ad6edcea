"""Every shipped profile decodes a register image built from its vendor document.

Each image (tests/collectors/profile_images/NAME.yaml) lists the words a device holds, in hex,
as the vendor document lays them out, and the values a reader of that document expects.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from collectors.profile import Profile, builtin_profiles, load_profile
from telemetry.quantities import vocabulary

IMAGES = Path(__file__).parent / "profile_images"
# profiles with a fixed map; `sunspec` is discovered on the device (see test_sunspec.py)
FIXED = [n for n in builtin_profiles() if isinstance(load_profile(n), Profile)]
NAMED = re.compile(r"^[a-z0-9]+-[a-z0-9-]+$")


def _image(name: str) -> dict[str, object]:
    data = yaml.safe_load((IMAGES / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _decode(profile: Profile, image: dict[int, dict[int, list[int]]]) -> dict[str, float]:
    words_at: dict[tuple[int, int], int] = {}
    for fc, block in image.items():
        for address, words in block.items():
            for i, w in enumerate(words):
                words_at[(int(fc), int(address) + i)] = w
    reads = []
    for r in profile.plan():
        missing = [a for a in range(r.address, r.end)
                   if (r.function, a) not in words_at and any(
                       f.address <= a < f.address + f.width for f in r.fields)]
        assert not missing, f"image lacks FC{r.function} registers {missing}"
        reads.append((r, [words_at.get((r.function, a), 0) for a in range(r.address, r.end)]))
    return profile.decode(reads)


def test_every_shipped_profile_has_an_image() -> None:
    assert sorted(p.stem for p in IMAGES.glob("*.yaml")) == FIXED
    assert sorted(set(builtin_profiles()) - set(FIXED)) == ["sunspec"]


@pytest.mark.parametrize("name", FIXED)
def test_profile_decodes_its_vendor_image(name: str) -> None:
    assert NAMED.match(name), "profiles are named vendor-model in lower case"
    profile = load_profile(name)
    assert isinstance(profile, Profile)
    assert profile.name == name
    image = _image(name)
    assert image["profile"] == name
    expected = image["expected"]
    assert isinstance(expected, dict)
    assert _decode(profile, image["registers"]) == pytest.approx(expected)  # type: ignore[arg-type]
    # meters measure power and energy in the canonical quantities
    assert all(q in vocabulary() for q in expected)
    for r in profile.plan():
        assert r.count <= profile.max_read_registers
