"""trafficsearch: find pedestrians and vehicles in traffic-camera crops from a text description."""

__version__ = "0.1.0"
