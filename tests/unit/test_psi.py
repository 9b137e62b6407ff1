"""PSI parsing and the pressure gate, on fake pressure files."""

from provium.scheduler.psi import PressureGate, read_pressure


def test_read_pressure(tmp_path):
    f = tmp_path / "cpu"
    f.write_text("some avg10=12.34 avg60=1.00 avg300=0.50 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert read_pressure(str(f)) == 12.34
    f.write_text("garbage\n")
    assert read_pressure(str(f)) is None
    assert read_pressure(str(tmp_path / "missing")) is None


def test_gate(tmp_path):
    cpu, mem = tmp_path / "cpu", tmp_path / "memory"
    cpu.write_text("some avg10=5.00 avg60=0 avg300=0 total=0\n")
    mem.write_text("some avg10=0.00 avg60=0 avg300=0 total=0\n")
    gate = PressureGate([str(cpu), str(mem)], threshold=10.0)
    assert not gate.pressured(now=1.0)
    mem.write_text("some avg10=30.00 avg60=0 avg300=0 total=0\n")
    assert not gate.pressured(now=1.1)  # re-read at most every 0.2 s
    assert gate.pressured(now=1.3)
    assert not PressureGate([str(tmp_path / "none")]).pressured()  # no data is not pressure
