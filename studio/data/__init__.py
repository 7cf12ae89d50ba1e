"""The data half of the engine: rows from a file, their shape, chat messages, tokens and masks.

Every dataset takes the same road: load_rows (readers) -> detect_format (shapes) -> row_messages
(shapes) -> tokenize_row (templates), and prepare() (prepare) walks it for all rows, splits off a
validation set and reports what it dropped and why, and what the chat template cannot render
(template_features). system_choice picks the system turn, the same in training and in the chat.
Errors name the file, line, row or column, and say how to fix it. No gradio here: the CLI, the
UI and the backends all share this package.
"""
from studio.data.errors import DataError
from studio.data.readers import load_rows
from studio.data.shapes import (CHAT_ROLES, FORMATS, SHAPES, DetectedFormat, Shape,
                                apply_role_mapping, detect_format, row_messages)
from studio.data.templates import (TemplateFeatures, Tokenized, render_segments, system_choice,
                                   template_features, tokenize_row)
from studio.data.prepare import prepare, prepare_dataset
from studio.data.prepared import DataReport, PreparedData

__all__ = ["DataError", "load_rows", "detect_format", "apply_role_mapping", "row_messages",
           "tokenize_row", "render_segments", "prepare", "prepare_dataset", "PreparedData",
           "DataReport", "DetectedFormat", "SHAPES", "FORMATS", "CHAT_ROLES", "Tokenized", "Shape",
           "TemplateFeatures", "template_features", "system_choice"]
