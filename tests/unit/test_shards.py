from scripts.tools.shards import main as shards_main
from task.config import Config
from task.data.device_text import load_device_text


def test_materialised_shards_are_device_folders_a_supernode_can_read(tmp_path, capsys):
    assert shards_main(["materialise", "--out", str(tmp_path), "--devices", "3"]) == 0
    out = capsys.readouterr().out
    assert "devices: 3 (3 usable" in out and "out of vocabulary" in out and "median" in out
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == ["device-000", "device-001", "device-002"]
    device = load_device_text(Config(), data_path=str(tmp_path / "device-001"))
    simulated = load_device_text(Config(), partition_id=1, num_partitions=3)
    assert (device.train, device.test) == (simulated.train, simulated.test)  # same text, same split
