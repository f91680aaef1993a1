"""Synthetic traffic data: the competition's label grammar, a renderer and the dataset generator.

The competition images are not public, so the demo and the tests run on crops rendered from sampled
labels: `grammar` samples label lines, `render` draws one image per label, `generate` writes the
competition layout, `sheet` shows samples to a person.
"""
