from __future__ import annotations

import pytest
import torch

from atlas.cli import main
from atlas.errors import AtlasError
from atlas.generator import FEATURES, Decoder, count_trainable, load_decoder, save_decoder
from atlas.methods import settings_for
from atlas.parameterise import PretrainedG, ScratchG

CPU = torch.device("cpu")


def test_scratch_trains_exactly_the_papers_5240841_parameters() -> None:
    param = ScratchG(settings_for("scratch", "paper"), [0], CPU)
    assert sum(p.numel() for p in param.parameters() if p.requires_grad) == 5_240_841
    assert count_trainable(param.decoder) + FEATURES == 5_240_841


def test_pretrained_trains_exactly_the_3200_alphas() -> None:
    decoder = Decoder(width=1.0)
    param = PretrainedG(settings_for("pretrained", "paper"), [0], decoder, CPU)
    trainable = [p for p in param.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 3_200
    assert count_trainable(param.decoder) == 0


def test_every_stage_has_the_authors_shape() -> None:
    decoder = Decoder(width=1.0)
    expected = [
        (128, 10),
        (512, 9),
        (512, 9),
        (512, 18),
        (256, 16),
        (256, 16),
        (256, 32),
        (256, 30),
        (256, 30),
        (256, 60),
        (128, 58),
        (128, 58),
        (128, 116),
        (128, 113),
        (128, 113),
        (128, 226),
        (3, 224),
    ]
    x = torch.ones(2, FEATURES).reshape(2, 128, 5, 5)
    shapes = []
    with torch.no_grad():
        for layer in decoder.layers:
            x = layer(x)
            shapes.append((x.shape[1], x.shape[2]))
            assert x.shape[2] == x.shape[3]
    assert shapes == expected


def test_a_decoder_of_three_copies_computes_three_lone_decoders() -> None:
    many = Decoder(width=0.0625, copies=3)
    for b in range(3):
        many.init_copy(b, torch.Generator().manual_seed(10 + b))
    f = torch.randn(3, FEATURES, generator=torch.Generator().manual_seed(1))
    many.train()
    with torch.no_grad():
        together = many(f)
        for b in range(3):
            lone = Decoder(width=0.0625)
            lone.load_state_dict(many.copy_state(b))
            lone.train()
            alone = lone(f[b : b + 1])
            # Grouped and plain convolutions round differently: outputs are ~N(0, 1), allow 2e-4.
            torch.testing.assert_close(together[b : b + 1], alone, atol=2e-4, rtol=1e-3)


def test_copy_init_is_the_same_as_a_lone_init() -> None:
    many = Decoder(width=0.0625, copies=2)
    many.init_copy(1, torch.Generator().manual_seed(5))
    lone = Decoder(width=0.0625)
    lone.init_copy(0, torch.Generator().manual_seed(5))
    for name, t in lone.state_dict().items():
        torch.testing.assert_close(many.copy_state(1)[name], t)


def test_same_padding_matches_tensorflow_for_even_kernels() -> None:
    # TF pads (k-1)//2 before and the rest after: for k=2, 0 before and 1 after.
    block = Decoder(width=0.0625).layers[2]  # conv 512*w k2 "same"
    assert block.pad.padding == (0, 1, 0, 1)
    block4 = Decoder(width=0.0625).layers[14]  # conv 128*w k4 "same"
    assert block4.pad.padding == (1, 2, 1, 2)


def test_decoder_round_trip_and_weights_only_load(tmp_path) -> None:
    dec = Decoder(width=0.0625)
    dec.init_copy(0, torch.Generator().manual_seed(3))
    path = tmp_path / "decoder.pt"
    save_decoder(dec, str(path), meta={"note": "test"})
    blob = torch.load(path, weights_only=True)
    assert blob["width"] == 0.0625
    back = load_decoder(str(path))
    for name, t in dec.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], t)


def test_a_decoder_of_another_architecture_is_refused(tmp_path) -> None:
    dec = Decoder(width=0.0625)
    path = tmp_path / "decoder.pt"
    save_decoder(dec, str(path))
    blob = torch.load(path, weights_only=True)
    blob["width"] = 0.125  # claims a width its weights do not have
    torch.save(blob, path)
    with pytest.raises(AtlasError, match="does not fit"):
        load_decoder(str(path))
    torch.save({"some": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(AtlasError, match="not an Atlas decoder"):
        load_decoder(str(tmp_path / "other.pt"))
    with pytest.raises(AtlasError, match="does not exist"):
        load_decoder(str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("name", ["missing.pt", "garbage.pt"])
def test_generate_refuses_a_bad_decoder_file(tmp_path, capsys, name) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--method",
            "pretrained",
            "--targets",
            "class:1",
            "--out",
            str(out),
            "--decoder",
            str(tmp_path / name),
            "--steps",
            "1",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "decoder" in err[0]
    assert not out.exists()


def test_saved_decoder_bytes_depend_only_on_its_contents(tmp_path) -> None:
    """Two saves of one decoder are the same bytes (reproducible outputs, comparable by sha256)."""
    from atlas.generator import Decoder, save_decoder

    decoder = Decoder(width=0.0625)
    save_decoder(decoder, tmp_path / "a.pt")
    save_decoder(decoder, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
