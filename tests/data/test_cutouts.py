"""avssl.data.cutouts: (picture, recording) pairs from a folder and from a .deb built here with the
standard library; the exact masks; what is skipped and why; one-line errors for bad sources."""
from __future__ import annotations

import numpy as np
import pytest

from avssl.data.cutouts import CutoutSourceError, deb_files, load_cutouts
from cutout_utils import SR
from cutout_utils import disc as _disc
from cutout_utils import png as _png
from cutout_utils import sound as _sound
from cutout_utils import write_deb as _write_deb
from cutout_utils import write_folder as _write_folder


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    disc = _disc()
    square = np.zeros((16, 16), bool)
    square[3:9, 5:12] = True
    return {
        "animals/cats/cat.png": _png(disc), "animals/cats/cat.ogg": _sound(440, fmt="OGG"),
        "animals/cats/cat_desc_fr.ogg": _sound(300, fmt="OGG"),       # a spoken description: not a pair
        "music/bell.png": _png(square, (10, 200, 30)), "music/bell.wav": _sound(880),
        "music/bell.flac": _sound(100, fmt="FLAC"),                   # .wav is preferred over .flac
        "tools/drill.png": _png(square), "tools/drill.flac": _sound(220, fmt="FLAC"),
        "photos/tree.png": _png(np.ones((8, 8), bool), mode="RGB"), "photos/tree.wav": _sound(330),
        "quiet/mouse.png": _png(disc), "quiet/mouse.wav": _sound(500, amp=0.0),
        "lonely/fox.png": _png(disc),                                 # no recording: not a pair
        "broken/owl.png": b"not a png", "broken/owl.wav": _sound(600),
    }


def test_pairs_from_a_folder_with_exact_masks_and_the_reasons_for_every_skip(files, tmp_path):
    found = load_cutouts(_write_folder(tmp_path / "src", files))
    assert found.names == ["cat", "bell", "drill"]  # sorted by path: animals/, music/, tools/
    cat, bell, drill = found.cutouts
    assert cat.group == "animals/cats" and cat.sample_rate == SR and cat.seconds == pytest.approx(0.5)
    # the picture is cropped to the opaque part; the mask is the disc exactly
    disc = _disc()
    rows, cols = np.flatnonzero(disc.any(1)), np.flatnonzero(disc.any(0))
    np.testing.assert_array_equal(cat.mask, disc[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    assert cat.rgba.dtype == np.uint8 and (cat.rgba[cat.mask][:, :3] == (200, 40, 10)).all()
    assert bell.mask.shape == (6, 7) and bell.mask.all()
    # .wav wins over .flac beside it: the 880 Hz tone, not the 100 Hz one
    spectrum = np.abs(np.fft.rfft(bell.wave))
    assert np.fft.rfftfreq(len(bell.wave), 1 / SR)[spectrum.argmax()] == pytest.approx(880, abs=3)
    assert drill.wave.dtype == np.float32 and np.abs(drill.wave).max() == pytest.approx(0.3, abs=1e-3)
    reasons = dict(found.skipped)
    assert set(reasons) == {"photos/tree.png", "quiet/mouse.png", "broken/owl.png"}
    assert "not a cut-out" in reasons["photos/tree.png"] and "silent" in reasons["quiet/mouse.png"]


def test_a_deb_gives_the_same_pairs_as_its_folder(files, tmp_path):
    folder = load_cutouts(_write_folder(tmp_path / "src", files))
    for data_name in ("data.tar.xz", "data.tar.gz"):
        deb = load_cutouts(_write_deb(tmp_path / f"stamps_{data_name}.deb", files, data_name))
        assert deb.names == folder.names and len(deb.skipped) == len(folder.skipped)
        for a, b in zip(deb.cutouts, folder.cutouts, strict=True):
            assert a.group == "usr/share/stamps/" + b.group
            np.testing.assert_array_equal(a.rgba, b.rgba)
            np.testing.assert_array_equal(a.wave, b.wave)
    only_png = deb_files(tmp_path / "stamps_data.tar.xz.deb", [".png"])
    assert sorted(only_png) == sorted("usr/share/stamps/" + n for n in files if n.endswith(".png"))


def test_a_stem_in_two_folders_is_named_by_its_folder(tmp_path):
    disc = _disc()
    src = _write_folder(tmp_path, {"birds/duck.png": _png(disc), "birds/duck.wav": _sound(300),
                                   "toys/duck.png": _png(disc), "toys/duck.wav": _sound(600)})
    assert load_cutouts(src).names == ["birds/duck", "toys/duck"]


def test_bad_sources_are_one_clear_error(files, tmp_path):
    with pytest.raises(CutoutSourceError, match="no such file"):
        load_cutouts(tmp_path / "missing")
    (tmp_path / "x.deb").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(CutoutSourceError, match="not a Debian package"):
        load_cutouts(tmp_path / "x.deb")
    with pytest.raises(CutoutSourceError, match="data.tar.zst: this Python cannot decompress it"):
        load_cutouts(_write_deb(tmp_path / "z.deb", files, "data.tar.zst"))
    with pytest.raises(CutoutSourceError, match="no <name>.png with a"):
        load_cutouts(_write_folder(tmp_path / "nopairs", {"a/fox.png": files["lonely/fox.png"]}))
    with pytest.raises(CutoutSourceError, match="none of its 1 pairs is usable"):
        load_cutouts(_write_folder(tmp_path / "unusable", {"a/tree.png": files["photos/tree.png"],
                                                           "a/tree.wav": files["photos/tree.wav"]}))
    truncated = tmp_path / "t.deb"
    truncated.write_bytes(_write_deb(tmp_path / "full.deb", files).read_bytes()[:-5000])
    with pytest.raises(CutoutSourceError, match="damaged"):
        load_cutouts(truncated)
