"""models/factory.py: one `load_model` for every family, both open_clip spellings, clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from trafficsearch.errors import ConfigError
from trafficsearch.models import load_model
from trafficsearch.models.factory import families


def test_every_family_is_registered() -> None:
    assert {"open_clip", "blip", "attributes"} <= set(families())


def test_both_open_clip_spellings_name_the_same_model_and_tag() -> None:
    errors = []
    for spec in ("open_clip:ts-tiny-test:no_such_tag", "open_clip:ts-tiny-test/no_such_tag"):
        with pytest.raises(ConfigError) as err:
            load_model(spec)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and "'no_such_tag' is neither a file nor a pretrained tag" in errors[0]
    torch.manual_seed(0)
    a = load_model("open_clip:ts-tiny-test")
    assert a.name == "ts-tiny-test" and a.manifest()["family"] == "open_clip"


def test_checkpoint_dirs_dispatch_on_their_family(tmp_path: Path) -> None:
    from trafficsearch.models.attributes import AttributeModel, create_attribute_model

    model = create_attribute_model(image_size=32, width=8, depth=2)
    model.save(tmp_path / "attrs")
    loaded = load_model(tmp_path / "attrs")
    assert isinstance(loaded, AttributeModel) and loaded.manifest() == model.manifest()
    # the attribute digest is the one it always was (index fingerprints must not move)
    digest = hashlib.sha256()
    for key, value in sorted(model.net.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    assert model.manifest()["weights_sha256"] == "state:" + digest.hexdigest()[:32]

    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "model.json").write_text(json.dumps({"family": "nope"}))
    with pytest.raises(ConfigError) as err:
        load_model(tmp_path / "odd")
    assert err.value.field == "family" and "unknown model family 'nope'" in str(err.value)
    with pytest.raises(ConfigError, match="model.json is missing"):
        load_model(tmp_path)
    with pytest.raises(ConfigError, match="neither a checkpoint directory"):
        load_model(tmp_path / "missing")
