from __future__ import annotations

import pytest

from atlas.errors import AtlasError
from atlas.targets import Target, check_targets, parse_specs, seeded_id, with_seeds
from tests.tiny import tiny_classifier


def ids(*specs: str) -> list[str]:
    return [t.id for t in parse_specs(specs)]


def test_spec_forms() -> None:
    assert ids("class:285") == ["class-0285"]
    assert ids("class:0-2") == ["class-0000", "class-0001", "class-0002"]
    assert ids("class:1,5,9") == ["class-0001", "class-0005", "class-0009"]
    assert ids("class:3,0-1") == ["class-0000", "class-0001", "class-0003"]
    assert ids("pair:9+30") == ["pair-0009+0030"]
    assert ids("pair:9+30,1+2") == ["pair-0009+0030", "pair-0001+0002"]
    assert ids("group:1+2+3") == ["group-0001+0002+0003"]
    assert ids("filter:features.9:0-1") == ["filter-features.9-0000", "filter-features.9-0001"]
    assert ids("filter:features.9:3+5") == ["filter-features.9-0003+0005"]
    assert ids("class:1; pair:1+2", "class:1") == ["class-0001", "pair-0001+0002"]


@pytest.mark.parametrize(
    "spec",
    [
        "285",
        "klass:1",
        "class:",
        "class:5-",
        "class:a",
        "class:9-3",
        "pair:1",
        "pair:1+2+3",
        "pair:1+1",
        "filter:0-7",
        "filter::1",
        "group:1",
    ],
)
def test_malformed_specs_are_one_line_errors(spec: str) -> None:
    with pytest.raises(AtlasError) as err:
        parse_specs([spec])
    message = str(err.value)
    assert "\n" not in message and repr(spec) in message


def test_seeds_depend_on_the_target_and_run_seed_only() -> None:
    a, b = Target("class", (1,)), Target("class", (2,))
    assert a.seed(0) == Target("class", (1,)).seed(0)
    assert a.seed(0) != b.seed(0) and a.seed(0) != a.seed(1)


def test_a_targets_seeds_are_targets_of_their_own_and_seed_0_is_the_target() -> None:
    t = Target("class", (285,))
    seeds = with_seeds([t, Target("filter", layer="features.9", channels=(3,))], 3)
    assert [s.id for s in seeds] == [
        "class-0285",
        "class-0285-seed1",
        "class-0285-seed2",
        "filter-features.9-0003",
        "filter-features.9-0003-seed1",
        "filter-features.9-0003-seed2",
    ]
    assert seeds[0] == t and seeds[0].seed(0) == t.seed(0)  # one seed: as before seeds existed
    assert len({s.seed(0) for s in seeds}) == 6
    assert {s.base_id for s in seeds[:3]} == {"class-0285"}
    assert seeded_id("pair-0001+0002", 4) == "pair-0001+0002-seed4"
    with pytest.raises(AtlasError, match="--seeds must be at least 1"):
        with_seeds([t], 0)


def test_targets_are_checked_against_the_classifier() -> None:
    clf = tiny_classifier(num_classes=6)
    check_targets(parse_specs(["class:0-5", "filter:conv:0-3"]), clf)
    with pytest.raises(AtlasError, match="class index 6 .* out of range"):
        check_targets(parse_specs(["class:6"]), clf)
    with pytest.raises(AtlasError, match=r"unknown layer 'nope'.*valid layers: conv, act, pool"):
        check_targets(parse_specs(["filter:nope:0"]), clf)
    with pytest.raises(AtlasError, match="channel 4 of layer conv is out of range"):
        check_targets(parse_specs(["filter:conv:4"]), clf)
