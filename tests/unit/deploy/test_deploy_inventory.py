"""Inventory loading and validation: every broken inventory fails before connecting, with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.deploy import InventoryError, known_data_keys, load_inventory
from meshctl.deploy.inventory import parse_inventory, validate_inventory

GOOD = """
control = [("ctl", {"ssh_hostname": "10.0.0.2", "public_address": "10.0.0.2"})]
derp = ([("derp1", {"ssh_hostname": "10.0.0.3"})], {"derp_region": 900})
nodes = [("n1", {"ssh_hostname": "10.0.0.4"}), ("n2", {"ssh_hostname": "10.0.0.5", "tags": ["tag:web"]})]
all = ([], {"ssh_user": "admin"})
_private = ["not-a-group"]
SOME_CONSTANT = 3
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.py"
    path.write_text(text)
    return path


def never_resolves(name: str) -> bool:
    return False


def test_good_inventory_loads_groups_and_merges_data(tmp_path: Path) -> None:
    spec = load_inventory(_write(tmp_path, GOOD), allowed_keys=known_data_keys(), resolve=never_resolves)
    assert spec.hosts == ("ctl", "derp1", "n1", "n2")
    assert spec.group("nodes") == ("n1", "n2")
    assert "_private" not in spec.groups and "SOME_CONSTANT" not in spec.groups
    # host data beats group data beats global data
    assert spec.data("derp1") == {"ssh_user": "admin", "derp_region": 900, "ssh_hostname": "10.0.0.3"}
    assert spec.data("n2")["tags"] == ["tag:web"]


def test_built_pyinfra_inventory_keeps_groups_and_data(tmp_path: Path) -> None:
    spec = load_inventory(_write(tmp_path, GOOD), allowed_keys=known_data_keys(), resolve=never_resolves)
    inv = spec.build(["n1", "derp1"], base_data={"ssh_user": "root", "ssh_key": "/k"})
    hosts = {h.name: h for h in inv}
    assert set(hosts) == {"n1", "derp1"}
    assert hosts["derp1"].data.derp_region == 900
    assert hosts["n1"].data.ssh_user == "admin"  # the inventory's global data beats the base data
    assert hosts["n1"].data.ssh_key == "/k"
    assert "nodes" in hosts["n1"].groups


@pytest.mark.parametrize(("text", "message"), [
    ("nodes = ['n1']\n", "no group 'control'"),
    ("control = [('c', {'ssh_hostname': '1.2.3.4'})]\n", "no group 'nodes'"),
    ("control = [('c', {'ssh_hostname': '1.2.3.4'})]\nnodes = []\n", "group 'nodes' is empty"),
    ("control = [('c', {'ssh_hostname': '1.2.3.4'}), ('d', {'ssh_hostname': '1.2.3.5'})]\n"
     "nodes = [('n', {'ssh_hostname': '1.2.3.6'})]\n", "group 'control' has 2 hosts; want exactly 1"),
])
def test_missing_or_wrong_groups(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory(_write(tmp_path, text), resolve=never_resolves)
    assert message in str(info.value)
    assert str(info.value).startswith("inventory fleet.py: ")
    assert "\n" not in str(info.value)


def test_unknown_data_key_names_the_host_and_suggests(tmp_path: Path) -> None:
    text = GOOD.replace('"tags": ["tag:web"]', '"ssh_prot": 2222')
    with pytest.raises(InventoryError) as info:
        load_inventory(_write(tmp_path, text), allowed_keys=known_data_keys(), resolve=never_resolves)
    err = info.value
    assert str(err) == "inventory fleet.py: host 'n2': unknown data key 'ssh_prot'"
    assert err.hint == "did you mean 'ssh_port'?"
    assert err.key == "ssh_prot"


def test_unknown_group_data_key(tmp_path: Path) -> None:
    text = GOOD.replace('{"derp_region": 900}', '{"derp_regoin": 900}')
    with pytest.raises(InventoryError, match="group 'derp' data: unknown data key 'derp_regoin'"):
        load_inventory(_write(tmp_path, text), allowed_keys=known_data_keys(), resolve=never_resolves)


def test_role_default_keys_are_allowed_only_when_given(tmp_path: Path) -> None:
    text = GOOD.replace('"tags": ["tag:web"]', '"wg_port": 51000')
    with pytest.raises(InventoryError, match="unknown data key 'wg_port'"):
        load_inventory(_write(tmp_path, text), allowed_keys=(), resolve=never_resolves)
    spec = load_inventory(_write(tmp_path, text), resolve=never_resolves)  # default: every role's keys
    assert spec.data("n2")["wg_port"] == 51000


def test_unresolvable_name_without_ssh_hostname(tmp_path: Path) -> None:
    text = GOOD.replace('("n1", {"ssh_hostname": "10.0.0.4"})', '"n1.invalid"')
    with pytest.raises(InventoryError) as info:
        load_inventory(_write(tmp_path, text), resolve=never_resolves)
    assert "host 'n1.invalid' does not resolve and has no ssh_hostname" in str(info.value)
    assert info.value.host == "n1.invalid"


def test_resolvable_name_needs_no_ssh_hostname(tmp_path: Path) -> None:
    text = GOOD.replace('("n1", {"ssh_hostname": "10.0.0.4"})', '"n1.example"')
    asked: list[str] = []

    def resolve(name: str) -> bool:
        asked.append(name)
        return True

    spec = load_inventory(_write(tmp_path, text), resolve=resolve)
    assert "n1.example" in spec.hosts
    assert asked == ["n1.example"]  # hosts with an ssh_hostname are not looked up


def test_host_listed_twice_in_a_group(tmp_path: Path) -> None:
    text = GOOD.replace('nodes = [("n1"', 'nodes = ["n2", ("n1"')
    with pytest.raises(InventoryError, match="group 'nodes' lists host 'n2' twice"):
        load_inventory(_write(tmp_path, text), resolve=never_resolves)


def test_host_with_two_different_data_dicts(tmp_path: Path) -> None:
    text = GOOD + 'web = [("n1", {"ssh_hostname": "10.9.9.9"})]\n'
    with pytest.raises(InventoryError, match="host 'n1' is given two different data dicts"):
        load_inventory(_write(tmp_path, text), resolve=never_resolves)


def test_same_host_in_two_groups_by_bare_name_is_fine(tmp_path: Path) -> None:
    spec = load_inventory(_write(tmp_path, GOOD + 'web = ["n1"]\n'), resolve=never_resolves)
    assert spec.groups_of("n1") == ("nodes", "web")
    assert spec.data("n1")["ssh_hostname"] == "10.0.0.4"


def test_connector_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="connector names such as @local are not supported"):
        load_inventory(_write(tmp_path, GOOD + 'extra = ["@local"]\n'), resolve=never_resolves)


def test_bad_entry_shape(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"group 'nodes': entry \('n1',\) is neither"):
        parse_inventory({"nodes": [("n1",)]}, "x.py")


def test_derp_region_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="derp_region 42 is not a region id 900-999"):
        load_inventory(_write(tmp_path, GOOD.replace("900", "42")), resolve=never_resolves)


def test_file_that_raises_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory(_write(tmp_path, "control = [\n  undefined_name]\n"), resolve=never_resolves)
    assert str(info.value) == "inventory fleet.py: executing it failed: NameError: name 'undefined_name' is not defined"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no such file"):
        load_inventory(tmp_path / "nope.py")


def test_validate_is_separate_from_parse() -> None:
    spec = parse_inventory({"control": ["c"], "nodes": ["n"]}, "x.py")
    validate_inventory(spec, resolve=lambda name: True)
    with pytest.raises(InventoryError, match="host 'c' does not resolve"):
        validate_inventory(spec, resolve=never_resolves)


def test_example_inventory_is_valid() -> None:
    example = Path(__file__).resolve().parents[3] / "inventories" / "example.py"
    spec = load_inventory(example, allowed_keys=known_data_keys(), resolve=never_resolves)
    assert spec.group("control") and spec.group("nodes") and spec.group("derp")
