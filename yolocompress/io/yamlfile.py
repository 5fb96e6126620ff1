"""The bounded YAML loader moved to :mod:`yolocompress.yamlfile` (the bottom layer, so that ``models`` can use
it); this name is kept for existing imports."""
from yolocompress.yamlfile import (MAX_ALIASES, MAX_BYTES, load_yaml_file, load_yaml_mapping, load_yaml_text,
                                   read_yaml_text)

__all__ = ["MAX_ALIASES", "MAX_BYTES", "load_yaml_file", "load_yaml_mapping", "load_yaml_text", "read_yaml_text"]
