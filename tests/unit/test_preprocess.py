"""The one preprocessing: an image file becomes the same model input at training time and at serving time."""
import io

import numpy as np
import pytest
from PIL import Image

from aimass.data.card import read_index
from aimass.data.decoding import decode_data_version
from aimass.data.importing import import_dataset
from aimass.data.preprocess import ImageDecodeError, InputSpec, decode_uploads, open_image, preprocess_image
from aimass.config import load_config


def test_an_uploaded_file_gives_exactly_the_array_ingest_trained_on(digits_folder, tmp_path):
    import_dataset(digits_folder, tmp_path / "data")
    config = load_config("tiny")
    decoded = decode_data_version(tmp_path / "data", "a" * 32 + ".dir", config.data, tmp_path / "cache")
    trained_on = np.load(decoded / "train-images.npy")
    spec = InputSpec(*trained_on.shape[1:], resize=config.data.resize)
    rows = read_index(tmp_path / "data")
    uploads = tuple((tmp_path / "data" / row["file"]).read_bytes() for row in rows[:12])
    assert np.array_equal(decode_uploads(uploads, spec), trained_on[:12])


@pytest.mark.parametrize("mode, expected", [
    ("squash", [255, 255, 255, 255]),  # the whole 8x4 stripe stretched over 4x4
    ("center-crop", [255, 255, 255, 255]),  # the middle 4x4 of the stripe
    ("pad", [0, 255, 255, 0]),  # the stripe shrunk to 4x2, black bars above and below
])
def test_resize_modes_keep_what_each_promises(mode, expected):
    stripe = Image.new("L", (8, 4), color=255)
    pixels = preprocess_image(stripe, InputSpec(1, 4, 4, resize=mode))
    assert pixels.shape == (1, 4, 4) and pixels[0, :, 1].tolist() == expected


def test_grey_images_become_three_channels_and_colour_images_one_as_the_spec_asks():
    colour = Image.new("RGB", (4, 4), color=(200, 100, 0))
    assert preprocess_image(colour, InputSpec(1, 4, 4)).shape == (1, 4, 4)
    assert preprocess_image(Image.new("L", (4, 4), 9), InputSpec(3, 4, 4))[:, 0, 0].tolist() == [9, 9, 9]


def test_an_exif_rotated_photo_is_turned_upright():
    image = Image.new("L", (6, 2), 0)
    image.putpixel((0, 0), 255)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stream = io.BytesIO()
    image.save(stream, format="JPEG", exif=exif.tobytes(), quality=100)
    assert open_image(stream.getvalue()).size == (2, 6)


def test_a_decompression_bomb_is_refused_before_decoding():
    stream = io.BytesIO()
    Image.new("L", (3000, 3000)).save(stream, format="PNG")
    with pytest.raises(ImageDecodeError, match="3000x3000 pixels is more than the limit of 1000000"):
        open_image(stream.getvalue(), max_pixels=1_000_000)
