"""The TOML recipe: schema (attrs), files (``extends``, ``--set``), structuring (cattrs) and errors, writing.

A recipe names one component per section and that component's settings::

    [dataset]                 # a dataset component and its settings
    name = "synthetic"
    [encoders.image]          # one encoder per modality; `frozen` is a core setting of every encoder
    name = "mlp"
    [anchor]                  # the anchor strategy
    name = "imagebind"
    anchor = "image"
    [loss]                    # defaults to the built-in symmetric InfoNCE
    name = "infonce"
    [[evaluators]]            # defaults to retrieval + zero_shot + knn
    name = "retrieval"
    [optimizer] / [trainer]   # core settings, see OptimizerSettings and TrainerSettings
    [logger]                  # optional loggers beside TensorBoard, see LoggerSettings

A recipe with problems raises :class:`RecipeError` with every problem and its TOML path (the CLI exits 2 and
writes nothing). ``extends = "base.toml"`` (relative to the file that says it) deep-merges tables and replaces
arrays; a section whose ``name`` changes replaces the base section. ``--set a.b=v`` overrides apply after
``extends`` and before structuring; ``v`` is parsed as a TOML value, falling back to a bare string.
"""

from .errors import RecipeError, nearest_hint
from .files import apply_overrides, parse_override_value, read_recipe_file
from .schema import ComponentSection, EncoderSection, LoggerSettings, OptimizerSettings, Recipe, TrainerSettings
from .structure import flatten_errors, load_recipe, make_converter, structure_recipe, toml_keys
from .writer import dump_toml, recipe_to_dict

__all__ = [
    "ComponentSection", "EncoderSection", "LoggerSettings", "OptimizerSettings", "Recipe", "RecipeError", "TrainerSettings",
    "apply_overrides", "dump_toml", "flatten_errors", "load_recipe", "make_converter", "nearest_hint",
    "parse_override_value", "read_recipe_file", "recipe_to_dict", "structure_recipe", "toml_keys",
]
