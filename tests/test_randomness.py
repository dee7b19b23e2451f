"""§5 random targets: bad generator runs fail with one clear message before any analysis; levels and statistics."""
import json, math
from dataclasses import replace
import pytest, torch
from revssl.config import get_preset, config_to_dict
from revssl.randomness import (GeneratorError, check_generator, generator_config, randomness_levels, target_stats,
                               ensure_generators)


def _fake_run(tmp_path, **changes):
    "A generator run directory holding only its config.json (no checkpoints)."
    ssl = get_preset("smoke")
    d = tmp_path/"gen"; d.mkdir()
    (d/"config.json").write_text(json.dumps(config_to_dict(replace(generator_config(ssl, "vit"), **changes))))
    return d, ssl

def test_missing_generator(tmp_path):
    with pytest.raises(GeneratorError, match="nowhere is missing"): check_generator(tmp_path/"nowhere", get_preset("smoke"))

def test_unfinished_generator(tmp_path):
    d, ssl = _fake_run(tmp_path)
    with pytest.raises(GeneratorError, match=r"is unfinished: it reached epoch 0 of 20"): check_generator(d, ssl)

def test_other_dataset_and_images(tmp_path):
    d, ssl = _fake_run(tmp_path, dataset="fashion_mnist")
    with pytest.raises(GeneratorError, match="trained on fashion_mnist, the SSL run on digits"): check_generator(d, ssl)
    with pytest.raises(GeneratorError, match="seed 0, the SSL run's 5"): check_generator(d, replace(ssl, seed=5,
                                                                                                     dataset="fashion_mnist"))

def test_missing_ssl_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a revssl run directory"): ensure_generators(tmp_path/"none")

def test_levels_and_stats():
    t = torch.tensor
    assert randomness_levels({0: t([0, 0, 0, 0]), 4: t([1, 2, 3, 4]), 2: t([1, 2, 0, 0])}) == {0: 1.0, 2: 0.5, 4: 0.0}
    s = target_stats(t([5, 5, 5, 5]), t([5, 1]))
    assert (s["classes"], s["entropy"], s["chance"]) == (1, 0.0, 0.5)
    assert math.isclose(target_stats(t([0, 1]), t([0]))["entropy"], 1.0)
